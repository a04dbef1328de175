//! `netctl ipsec peer`: the external IPsec peers of the site gateways (another
//! vendor's VPN gateway; `ipsec/peers/<name>` in the store): add, apply, list, get,
//! delete.
//!
//! A pre-shared key is never taken on the command line, where it would land in the
//! shell's history and in `ps`: `--psk-stdin` reads it from standard input (a pipe or
//! a file, not a terminal, where it would show), and `--psk-file` stores a reference
//! to a file that every gateway of the site holds. Nothing printed here holds a stored
//! key: the agent leaves it out of every answer, and only its answers are printed.

use std::io::{IsTerminal, Read};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ipnet::IpNet;
use strait_api::Client;
use strait_api::gateway::{
    ExternalPeer, Initiate, PeerAuth, PeerBgp, parse_peer_documents, validate_peer_name,
};

use crate::table::Table;
use crate::{Output, emit};

/// A key read from standard input longer than this is not a pre-shared key.
const MAX_PSK_LEN: u64 = 4096;

#[derive(Debug, Subcommand)]
pub enum PeerCmd {
    /// Add an external peer, or replace the one of that name whole (its old key is
    /// not kept: give the key again, or a file).
    Add(Box<AddArgs>),
    /// Create or replace the peers of a YAML or JSON file (`-` for stdin): one peer,
    /// a list, or several YAML documents. All are checked first: one bad peer and
    /// none is written.
    Apply {
        /// The file, or `-` for stdin.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// The external peers (pre-shared keys are never shown).
    List,
    /// One external peer in full (its pre-shared key is never shown).
    Get { name: String },
    /// Remove an external peer: its tunnels go down and its routes leave.
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// A pre-shared key: --psk-stdin or --psk-file.
    Psk,
    /// X.509 certificates: --cert, --key and --ca.
    Cert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitiateArg {
    /// Whoever is first (the default).
    Both,
    /// Only strait initiates.
    Strait,
    /// strait only answers (a peer behind a NAT, say).
    Peer,
}

impl From<InitiateArg> for Initiate {
    fn from(a: InitiateArg) -> Self {
        match a {
            InitiateArg::Both => Initiate::Both,
            InitiateArg::Strait => Initiate::Strait,
            InitiateArg::Peer => Initiate::Peer,
        }
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The peer's name (a DNS label: lowercase letters, digits, '-').
    pub name: String,
    /// The site whose gateways connect to it.
    #[arg(long)]
    pub site: String,
    /// The peer's IKE address; without it strait only answers.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Who initiates the IKE SA.
    #[arg(long, value_enum, default_value_t = InitiateArg::Both)]
    pub initiate: InitiateArg,
    /// How both sides authenticate.
    #[arg(long, value_enum)]
    pub auth: AuthArg,
    /// A file on every gateway of the site holding the pre-shared key (absolute path;
    /// mode 0600, owned by root). Only the path is stored.
    #[arg(long, value_name = "PATH", conflicts_with = "psk_stdin")]
    pub psk_file: Option<PathBuf>,
    /// Read the pre-shared key from standard input (one trailing newline dropped) and
    /// keep it in the store.
    #[arg(long)]
    pub psk_stdin: bool,
    /// Our certificate (PEM, on every gateway of the site).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The CA the peer's certificate must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Our IKE identity (`fqdn:…`, `ipv4:…`, `ipv6:…`, `email:…`, `dn:CN=…`).
    #[arg(long, value_name = "ID")]
    pub local_id: Option<String>,
    /// The identity the peer must prove, as --local-id.
    #[arg(long, value_name = "ID")]
    pub remote_id: Option<String>,
    /// A local network besides the site's container pools (repeat for more).
    #[arg(long = "local-net", value_name = "CIDR")]
    pub local_nets: Vec<IpNet>,
    /// A network behind the peer (repeat for more).
    #[arg(long = "remote-net", value_name = "CIDR")]
    pub remote_nets: Vec<IpNet>,
    /// BGP through the tunnel with the router behind the peer: its AS.
    #[arg(long, value_name = "N", requires_all = ["bgp_address", "bgp_local_address"])]
    pub bgp_asn: Option<u32>,
    /// The address of that router (reached through the tunnel).
    #[arg(long, value_name = "IP", requires = "bgp_asn")]
    pub bgp_address: Option<IpAddr>,
    /// Our end of that session, held by the gateway carrying the peer (an address of
    /// no other use, e.g. a cloud VPN's inside-tunnel address).
    #[arg(long, value_name = "IP", requires = "bgp_asn")]
    pub bgp_local_address: Option<IpAddr>,
    /// Our AS towards that router (default 64512).
    #[arg(long, value_name = "N", requires = "bgp_asn")]
    pub bgp_local_asn: Option<u32>,
}

impl AddArgs {
    /// The peer to store, checked as the agent checks it; `stdin` gives the key of
    /// `--psk-stdin`.
    pub fn peer(&self, stdin: impl FnOnce() -> Result<String>) -> Result<ExternalPeer> {
        let auth = match self.auth {
            AuthArg::Psk => {
                if self.cert.is_some() || self.key.is_some() || self.ca.is_some() {
                    bail!("--cert, --key and --ca go with --auth cert, not psk");
                }
                match (&self.psk_file, self.psk_stdin) {
                    (Some(f), false) => PeerAuth::Psk {
                        secret: None,
                        secret_file: Some(f.clone()),
                    },
                    (None, true) => PeerAuth::Psk {
                        secret: Some(stdin()?),
                        secret_file: None,
                    },
                    _ => bail!(
                        "--auth psk needs --psk-stdin or --psk-file PATH (a key on the \
                         command line would land in the shell's history and in ps)"
                    ),
                }
            }
            AuthArg::Cert => {
                if self.psk_file.is_some() || self.psk_stdin {
                    bail!("--psk-file and --psk-stdin go with --auth psk, not cert");
                }
                match (&self.cert, &self.key, &self.ca) {
                    (Some(c), Some(k), Some(a)) => PeerAuth::Cert {
                        cert_file: c.clone(),
                        key_file: k.clone(),
                        ca_file: a.clone(),
                    },
                    _ => bail!("--auth cert needs --cert FILE, --key FILE and --ca FILE"),
                }
            }
        };
        let peer = ExternalPeer {
            name: self.name.clone(),
            site: self.site.clone(),
            address: self.address,
            initiate: self.initiate.into(),
            auth,
            local_id: self.local_id.clone(),
            remote_id: self.remote_id.clone(),
            local_networks: self.local_nets.clone(),
            remote_networks: self.remote_nets.clone(),
            bgp: match (self.bgp_asn, self.bgp_address, self.bgp_local_address) {
                (Some(asn), Some(address), Some(local_address)) => Some(PeerBgp {
                    address,
                    asn,
                    local_address,
                    local_asn: self.bgp_local_asn,
                }),
                _ => None,
            },
        };
        // Checked here too, so a bad name never reaches the request line.
        peer.validate().map_err(anyhow::Error::msg)?;
        Ok(peer)
    }
}

/// The key `--psk-stdin` reads: all of standard input, one trailing newline dropped.
/// A terminal is refused: what is typed there shows on the screen.
fn read_psk_from_stdin() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(
            "--psk-stdin reads the key from a pipe or a file, not a terminal (where it \
             would show): e.g. `netctl ipsec peer add … --psk-stdin < key.txt`"
        );
    }
    let mut raw = Vec::new();
    stdin
        .lock()
        .take(MAX_PSK_LEN + 1)
        .read_to_end(&mut raw)
        .context("reading the pre-shared key from stdin")?;
    psk_text(raw)
}

/// The key in what was read: one trailing newline dropped, UTF-8, not empty, not huge.
fn psk_text(mut raw: Vec<u8>) -> Result<String> {
    if raw.len() as u64 > MAX_PSK_LEN {
        bail!("stdin holds more than {MAX_PSK_LEN} bytes: not a pre-shared key");
    }
    if raw.ends_with(b"\r\n") {
        raw.truncate(raw.len() - 2);
    } else if raw.ends_with(b"\n") {
        raw.truncate(raw.len() - 1);
    }
    if raw.is_empty() {
        bail!("no pre-shared key on stdin");
    }
    String::from_utf8(raw)
        .map_err(|_| anyhow::anyhow!("the pre-shared key on stdin is not text (UTF-8)"))
}

pub fn run(client: &Client, out: Output, cmd: PeerCmd) -> Result<()> {
    match cmd {
        PeerCmd::Add(args) => {
            let peer = args.peer(read_psk_from_stdin)?;
            let shown = client.put_ipsec_peer(&peer)?;
            emit(out, &shown, || render_list(std::slice::from_ref(&shown)))?;
        }
        PeerCmd::Apply { file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the peers from stdin")?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let peers = parse_peer_documents(&text)
                .map_err(|e| anyhow::anyhow!("{file}: {e}; nothing was written"))?;
            let shown = client.apply_ipsec_peers(&peers)?;
            emit(out, &shown, || {
                shown
                    .iter()
                    .map(|p| format!("external IPsec peer {} set\n", p.name))
                    .collect()
            })?;
        }
        PeerCmd::List => {
            let peers = client.ipsec_peers()?;
            emit(out, &peers, || render_list(&peers))?;
        }
        PeerCmd::Get { name } => {
            validate_peer_name(&name).map_err(anyhow::Error::msg)?;
            let peer = client.ipsec_peer(&name)?;
            emit(out, &peer, || render_one(&peer))?;
        }
        PeerCmd::Delete { name } => {
            validate_peer_name(&name).map_err(anyhow::Error::msg)?;
            client.delete_ipsec_peer(&name)?;
            emit(out, &serde_json::json!({}), || {
                format!("external IPsec peer {name} deleted\n")
            })?;
        }
    }
    Ok(())
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn initiate_word(i: Initiate) -> &'static str {
    match i {
        Initiate::Both => "both",
        Initiate::Strait => "strait",
        Initiate::Peer => "peer",
    }
}

/// `psk` (the key in the store), `psk-file` or `cert`.
fn auth_word(auth: &PeerAuth) -> &'static str {
    match auth {
        PeerAuth::Psk {
            secret_file: Some(_),
            ..
        } => "psk-file",
        PeerAuth::Psk { .. } => "psk",
        PeerAuth::Cert { .. } => "cert",
    }
}

fn nets(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return "-".into();
    }
    nets.iter()
        .map(IpNet::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn bgp_word(b: &Option<PeerBgp>) -> String {
    or_dash(b.as_ref().map(|b| format!("AS{}@{}", b.asn, b.address)))
}

pub fn render_list(peers: &[ExternalPeer]) -> String {
    let mut t = Table::new([
        "NAME",
        "SITE",
        "ADDRESS",
        "INITIATE",
        "AUTH",
        "REMOTE-ID",
        "REMOTE-NETS",
        "BGP",
    ]);
    for p in peers {
        t.row([
            p.name.as_str(),
            &p.site,
            &or_dash(p.address.map(|a| a.to_string())),
            initiate_word(p.initiate),
            auth_word(&p.auth),
            &or_dash(p.remote_id.clone()),
            &nets(&p.remote_networks),
            &bgp_word(&p.bgp),
        ]);
    }
    t.render()
}

/// One peer, field by field; a key kept in the store is said to be there, never shown.
pub fn render_one(p: &ExternalPeer) -> String {
    let auth = match &p.auth {
        PeerAuth::Psk {
            secret_file: Some(f),
            ..
        } => format!("psk, key in {} on each gateway", f.display()),
        PeerAuth::Psk { .. } => "psk, key in the store (not shown)".to_string(),
        PeerAuth::Cert {
            cert_file,
            key_file,
            ca_file,
        } => format!(
            "cert {} (key {}, CA {})",
            cert_file.display(),
            key_file.display(),
            ca_file.display()
        ),
    };
    let mut t = Table::new(["name", &p.name]);
    t.row(["site", &p.site]);
    t.row([
        "address",
        &p.address
            .map_or_else(|| "- (strait only answers)".into(), |a| a.to_string()),
    ]);
    t.row(["initiate", initiate_word(p.initiate)]);
    t.row(["auth", &auth]);
    t.row([
        "local id",
        p.local_id
            .as_deref()
            .unwrap_or("- (the gateway's underlay address)"),
    ]);
    t.row([
        "remote id",
        p.remote_id.as_deref().unwrap_or("- (the peer's address)"),
    ]);
    t.row([
        "local nets",
        &format!(
            "the site's pools{}",
            match nets(&p.local_networks).as_str() {
                "-" => String::new(),
                more => format!(", {more}"),
            }
        ),
    ]);
    t.row(["remote nets", &nets(&p.remote_networks)]);
    t.row(["bgp", &bgp_word(&p.bgp)]);
    if let Some(b) = &p.bgp {
        t.row([
            "bgp local",
            &format!("AS{}@{}", b.local_asn(), b.local_address),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: PeerCmd,
    }

    fn add(args: &[&str]) -> Result<AddArgs, clap::Error> {
        let mut v = vec!["peer", "add"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.cmd {
            PeerCmd::Add(a) => Ok(*a),
            other => panic!("{other:?}"),
        }
    }

    const BASE: &[&str] = &["onprem", "--site", "dc", "--remote-net", "192.168.50.0/24"];

    fn with(extra: &[&'static str]) -> AddArgs {
        add(&[BASE, extra].concat()).unwrap()
    }

    #[test]
    fn a_psk_comes_from_stdin_or_a_file_never_from_the_command_line() {
        let a = with(&["--auth", "psk", "--psk-stdin"]);
        let p = a.peer(|| Ok("correct horse battery".into())).unwrap();
        assert!(
            matches!(&p.auth, PeerAuth::Psk { secret: Some(s), .. } if s == "correct horse battery")
        );
        let a = with(&["--auth", "psk", "--psk-file", "/etc/strait/onprem.psk"]);
        let p = a.peer(|| panic!("stdin is not read")).unwrap();
        assert!(matches!(
            &p.auth,
            PeerAuth::Psk { secret: None, secret_file: Some(f) } if f.to_str() == Some("/etc/strait/onprem.psk")
        ));
        // No flag takes the key itself.
        assert!(add(&[BASE, &["--auth", "psk", "--psk", "secret"]].concat()).is_err());
        let e = with(&["--auth", "psk"])
            .peer(|| unreachable!())
            .unwrap_err();
        assert!(e.to_string().contains("--psk-stdin or --psk-file"), "{e}");
        assert!(
            add(&[BASE, &["--auth", "psk", "--psk-stdin", "--psk-file", "/k"]].concat()).is_err()
        );
        // A short key is refused before any request.
        let e = with(&["--auth", "psk", "--psk-stdin"])
            .peer(|| Ok("short".into()))
            .unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
    }

    #[test]
    fn certificates_need_all_three_files() {
        let a = with(&[
            "--auth",
            "cert",
            "--cert",
            "/c.pem",
            "--key",
            "/k.pem",
            "--ca",
            "/ca.pem",
            "--remote-id",
            "dn:CN=gw",
            "--bgp-asn",
            "64600",
            "--bgp-address",
            "10.9.0.1",
            "--bgp-local-address",
            "169.254.100.1",
            "--initiate",
            "strait",
            "--address",
            "203.0.113.9",
        ]);
        let p = a.peer(|| unreachable!()).unwrap();
        assert_eq!(p.initiate, Initiate::Strait);
        assert_eq!(p.bgp.as_ref().map(|b| b.asn), Some(64600));
        let e = with(&["--auth", "cert", "--cert", "/c.pem"])
            .peer(|| unreachable!())
            .unwrap_err();
        assert!(e.to_string().contains("--key FILE"), "{e}");
        let e = with(&["--auth", "cert", "--psk-stdin"])
            .peer(|| unreachable!())
            .unwrap_err();
        assert!(e.to_string().contains("go with --auth psk"), "{e}");
        assert!(add(&[BASE, &["--auth", "cert", "--bgp-asn", "1"]].concat()).is_err());
        // A router without our end of the session is refused by the parser.
        assert!(
            add(&[
                BASE,
                &[
                    "--auth",
                    "cert",
                    "--bgp-asn",
                    "64600",
                    "--bgp-address",
                    "10.9.0.1"
                ]
            ]
            .concat())
            .is_err()
        );
    }

    #[test]
    fn the_key_read_loses_one_newline_and_must_be_text() {
        assert_eq!(psk_text(b"k\n".to_vec()).unwrap(), "k");
        assert_eq!(psk_text(b"k\r\n".to_vec()).unwrap(), "k");
        assert_eq!(psk_text(b"k\n\n".to_vec()).unwrap(), "k\n");
        assert!(psk_text(b"\n".to_vec()).is_err());
        assert!(psk_text(vec![0xff; 20]).is_err());
        assert!(psk_text(vec![b'k'; 5000]).is_err());
    }

    fn shown_peers() -> Vec<ExternalPeer> {
        let text = "name: onprem\nsite: dc\naddress: 198.51.100.7\nauth: {method: psk, secret: correct horse battery}\nremote_id: fqdn:gw.example\nremote_networks: [192.168.50.0/24, 10.8.0.0/16]\n---\nname: cloud\nsite: dc\ninitiate: peer\nauth: {method: psk, secret_file: /etc/strait/cloud.psk}\nbgp: {address: 10.9.0.1, asn: 64600, local_address: 169.254.100.1}\n";
        parse_peer_documents(text)
            .unwrap()
            .iter()
            .map(ExternalPeer::redacted)
            .collect()
    }

    #[test]
    fn the_list_has_one_row_per_peer() {
        let out = render_list(&shown_peers());
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            [
                "NAME",
                "SITE",
                "ADDRESS",
                "INITIATE",
                "AUTH",
                "REMOTE-ID",
                "REMOTE-NETS",
                "BGP"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "onprem",
                "dc",
                "198.51.100.7",
                "both",
                "psk",
                "fqdn:gw.example",
                "192.168.50.0/24,10.8.0.0/16",
                "-"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "cloud",
                "dc",
                "-",
                "peer",
                "psk-file",
                "-",
                "-",
                "AS64600@10.9.0.1"
            ]
        );
    }

    #[test]
    fn one_peer_says_where_its_key_is() {
        let peers = shown_peers();
        let out = render_one(&peers[0]);
        assert!(out.contains("psk, key in the store (not shown)"), "{out}");
        let out = render_one(&peers[1]);
        assert!(out.contains("key in /etc/strait/cloud.psk"), "{out}");
        assert!(out.contains("- (strait only answers)"), "{out}");
    }
}

//! A throwaway PKI made with the `openssl` command in a temporary directory, for the
//! certificate tests: CAs, intermediates and gateway certificates with chosen keys,
//! subjectAltNames and validity periods. Files are `NAME.crt` and `NAME.key` (PKCS#8);
//! [`Pki::traditional`] writes the key also as PKCS#1 / SEC1 (`NAME.trad.key`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the PKI cannot be made here, if it cannot.
pub fn openssl_missing() -> Option<String> {
    match Command::new("openssl").arg("version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the openssl command is not installed".into()),
    }
}

/// A key type as `openssl genpkey` takes it.
#[derive(Debug, Clone, Copy)]
pub enum KeyType {
    Rsa(u32),
    P256,
    P384,
}

pub struct Pki {
    pub dir: tempfile::TempDir,
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    Days(u32),
    /// `openssl ca` dates, `YYYYMMDDHHMMSSZ`.
    Between(&'static str, &'static str),
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CA_CONF: &str = "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n\
serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
[p]\ncommonName = supplied\norganizationName = optional\n";

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A fresh PKI directory with `openssl ca`'s bookkeeping files.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("index.txt"), "").unwrap();
        std::fs::write(dir.path().join("serial"), "1000\n").unwrap();
        std::fs::write(dir.path().join("ca.cnf"), CA_CONF).unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn crt(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.crt"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.key"))
    }

    fn genkey(&self, name: &str, key: KeyType) {
        let out = format!("{name}.key");
        let bits;
        let args: Vec<&str> = match key {
            KeyType::Rsa(n) => {
                bits = format!("rsa_keygen_bits:{n}");
                vec![
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    &bits,
                    "-out",
                    &out,
                ]
            }
            KeyType::P256 => vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &out,
            ],
            KeyType::P384 => vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                &out,
            ],
        };
        run(self.dir.path(), &args);
    }

    /// A self-signed root CA with subject `subject` (`/CN=.../O=...`).
    pub fn root(&self, name: &str, subject: &str, key: KeyType) {
        self.genkey(name, key);
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\n",
        )
        .unwrap();
        let (k, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        run(
            self.dir.path(),
            &["req", "-new", "-key", &k, "-subj", subject, "-out", &csr],
        );
        run(
            self.dir.path(),
            &[
                "x509", "-req", "-in", &csr, "-key", &k, "-days", "3650", "-extfile", &ext, "-out",
                &crt,
            ],
        );
    }

    /// A certificate issued by `issuer`: a CA (intermediate) when `ca`, else a
    /// gateway's with `sans` (as `DNS:gw.example,IP:192.0.2.1`, may be empty).
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        name: &str,
        subject: &str,
        key: KeyType,
        issuer: &str,
        ca: bool,
        sans: &str,
        validity: Validity,
    ) {
        self.genkey(name, key);
        let mut ext = if ca {
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n".to_string()
        } else {
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n".to_string()
        };
        if !sans.is_empty() {
            ext.push_str(&format!("subjectAltName={sans}\n"));
        }
        let extfile = format!("{name}.ext");
        std::fs::write(self.path(&extfile), ext).unwrap();
        let (k, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let (ic, ik) = (format!("{issuer}.crt"), format!("{issuer}.key"));
        run(
            self.dir.path(),
            &["req", "-new", "-key", &k, "-subj", subject, "-out", &csr],
        );
        let days;
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", &ic, "-keyfile", &ik, "-in",
            &csr, "-out", &crt, "-extfile", &extfile,
        ];
        match validity {
            Validity::Days(n) => {
                days = n.to_string();
                args.extend(["-days", &days]);
            }
            Validity::Between(start, end) => args.extend(["-startdate", start, "-enddate", end]),
        }
        run(self.dir.path(), &args);
    }

    /// `NAME.trad.key`: the key as PKCS#1 (RSA) or SEC1 (EC).
    pub fn traditional(&self, name: &str) -> PathBuf {
        let (k, out) = (format!("{name}.key"), format!("{name}.trad.key"));
        run(
            self.dir.path(),
            &["pkey", "-in", &k, "-traditional", "-out", &out],
        );
        self.path(&out)
    }

    /// A file holding the certificates `names` one after another.
    pub fn bundle(&self, file: &str, names: &[&str]) -> PathBuf {
        let mut pem = String::new();
        for n in names {
            pem.push_str(&std::fs::read_to_string(self.crt(n)).unwrap());
        }
        std::fs::write(self.path(file), pem).unwrap();
        self.path(file)
    }

    /// The DER of `NAME.crt`.
    pub fn der(&self, name: &str) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["x509", "-in"])
            .arg(self.crt(name))
            .args(["-outform", "DER"])
            .output()
            .expect("openssl runs");
        assert!(out.status.success());
        out.stdout
    }
}

//! A strait site gateway refusing another vendor's gateway, end to end, with
//! strongSwan's charon (5.9, kernel-libipsec) as that gateway: proposals that do not
//! match ours, an expired certificate, a certificate naming another identity than
//! the peer's remote_id, and traffic selectors the peer will not accept. Each fails
//! with its reason in plain words in `netctl ipsec peers` and in the agent's log;
//! nothing from the containers reaches charon in clear (every host has a plain route
//! to the LAN through charon, and charon counts what arrives from the container
//! pool); the agent keeps serving the containers.
//!
//! Root, etcd and strongSwan's charon with kernel-libipsec needed (visible SKIP
//! otherwise); the certificate cases need openssl.

use std::sync::Arc;

use strait_testbeds::cluster::Container;
use strait_testbeds::gateway::{
    CONVERGE, GatewayBed, LAN, LAN_HOST, POLL, POOL, PSK, external, ping, privileged,
};
use strait_testbeds::pki::{self, KeyType, Pki, Validity};
use strait_testbeds::wait_until;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bed with two hosts (h1 the gateway), the leak counter on, a container on
/// each host.
fn bed() -> (GatewayBed, Arc<Container>, Arc<Container>) {
    let mut bed = GatewayBed::start(2, &[0], None, &[]);
    bed.watch_leaks();
    let c1 = bed.cluster.add_container(0, "c1");
    let c2 = bed.cluster.add_container(1, "c2");
    (bed, c1, c2)
}

/// charon's connection `strait` to host 1: its IKE and ESP proposals, its `local`
/// and `remote` sections' bodies, the selector it allows on strait's side, when it
/// starts (`start_action`), and its `secrets` section's body.
struct Charon<'a> {
    ike: &'a str,
    esp: &'a str,
    local: String,
    remote: String,
    remote_ts: &'a str,
    start: &'a str,
    secrets: String,
}

impl Charon<'_> {
    fn conf(&self, bed: &GatewayBed) -> String {
        let h1 = bed.cluster.hosts()[0].underlay_v4;
        let me = &bed.gw_addr;
        format!(
            "connections {{\n  strait {{\n    version = 2\n    local_addrs = {me}\n    \
             remote_addrs = {h1}\n    proposals = {}\n    local {{\n{}\n    }}\n    \
             remote {{\n{}\n    }}\n    children {{\n      lan {{\n        \
             local_ts = {LAN}\n        remote_ts = {}\n        esp_proposals = {}\n        \
             mode = tunnel\n        start_action = {}\n      }}\n    }}\n  }}\n}}\n\
             secrets {{\n{}\n}}\n",
            self.ike, self.local, self.remote, self.remote_ts, self.esp, self.start, self.secrets
        )
    }

    /// PSK on both sides, each side's address its identity (strait's default).
    fn psk(bed: &GatewayBed) -> Self {
        let h1 = bed.cluster.hosts()[0].underlay_v4;
        let me = &bed.gw_addr;
        Charon {
            ike: "aes256gcm16-prfsha384-x25519",
            esp: "aes256gcm16-x25519",
            local: format!("      auth = psk\n      id = {me}"),
            remote: format!("      auth = psk\n      id = {h1}"),
            remote_ts: POOL,
            start: "none",
            secrets: format!(
                "  ike-strait {{\n    id-a = {me}\n    id-b = {h1}\n    secret = \"{PSK}\"\n  }}"
            ),
        }
    }
}

/// The peer as strait declares it with a PSK; `initiate` as the record takes it.
fn psk_peer(bed: &GatewayBed, initiate: &str) -> String {
    format!(
        "name: onprem\nsite: dc\naddress: {}\ninitiate: {initiate}\n\
         auth: {{method: psk, secret: {PSK}}}\nremote_networks: [{LAN}]\n",
        bed.gw_addr
    )
}

/// Waits for the peer's failure on h1 with an error `matches` accepts, then checks
/// the rest of the contract: the same reason in the agent's log, nothing carried,
/// nothing sent in clear, and the agent still serving. Returns the error.
fn refused(
    bed: &GatewayBed,
    c1: &Container,
    c2: &Container,
    charon_log: impl Fn() -> String,
    matches: impl Fn(&str) -> bool,
) -> String {
    let h1 = &bed.cluster.hosts()[0];
    let mut error = String::new();
    wait_until(
        "the refusal is reported",
        CONVERGE,
        POLL,
        || match external(h1) {
            Some(p) if p.last_error.as_deref().is_some_and(&matches) => {
                error = p.last_error.clone().unwrap_or_default();
                Ok(())
            }
            other => Err(format!("{other:?}\n{}", charon_log())),
        },
    )
    .unwrap();
    let log = h1.agent.log();
    assert!(
        log.contains(&error),
        "the agent's log says it too: {error}\n{log}"
    );
    let p = external(h1).expect("peer");
    assert!(p.child_sas.is_empty(), "no Child SA: {p:?}");
    for c in [c1, c2] {
        assert!(
            !ping(&c.ns, LAN_HOST),
            "{} → {LAN_HOST} without an SA",
            c.name
        );
    }
    assert_eq!(
        bed.leaked(),
        0,
        "packets from the pool reached charon in clear"
    );
    assert!(ping(&c1.ns, &c2.ip4().to_string()), "c1 → c2 still works");
    assert!(ping(&c2.ns, &c1.ip4().to_string()), "c2 → c1 still works");
    eprintln!("refused: {error}");
    error
}

/// charon proposes only AES-CBC-128/SHA1/MODP2048 for the IKE SA: strait, answering,
/// refuses it and says what the peer proposed and what it accepts.
#[test]
fn a_peer_proposing_only_what_we_refuse_is_told_and_named() {
    let t = "a_peer_proposing_only_what_we_refuse_is_told_and_named";
    if !privileged(t) {
        return;
    }
    let _serial = serial();
    let (bed, c1, c2) = bed();
    let mut conf = Charon::psk(&bed);
    conf.ike = "aes128-sha1-modp2048";
    conf.esp = "aes128-sha1";
    conf.start = "start";
    let charon = bed.charon(&conf.conf(&bed), &[]).expect("charon");
    bed.apply_peer(0, &psk_peer(&bed, "peer"));
    let e = refused(&bed, &c1, &c2, || charon.log(), |e| e.contains("proposed"));
    assert!(
        e.contains("IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048")
            && e.contains("we accept IKE:AES_GCM_16_256"),
        "{e}"
    );
}

/// strait initiates; charon accepts only AES-CBC-128/SHA1/MODP2048 and answers
/// NO_PROPOSAL_CHOSEN: strait says the peer took none of what it offered, and what.
#[test]
fn a_peer_accepting_none_of_our_proposals_is_reported_with_what_we_offered() {
    let t = "a_peer_accepting_none_of_our_proposals_is_reported_with_what_we_offered";
    if !privileged(t) {
        return;
    }
    let _serial = serial();
    let (bed, c1, c2) = bed();
    let mut conf = Charon::psk(&bed);
    conf.ike = "aes128-sha1-modp2048";
    let charon = bed.charon(&conf.conf(&bed), &[]).expect("charon");
    bed.apply_peer(0, &psk_peer(&bed, "strait"));
    let e = refused(
        &bed,
        &c1,
        &c2,
        || charon.log(),
        |e| e.contains("NO_PROPOSAL_CHOSEN"),
    );
    assert!(e.contains("we offered IKE:AES_GCM_16_256"), "{e}");
}

/// The IKE SA's proposals match, the Child SA's (ESP AES-CBC-128/SHA1) do not: the
/// IKE SA comes up, the Child SA is refused with what the peer proposed.
#[test]
fn a_child_sa_with_proposals_we_refuse_is_told_and_named() {
    let t = "a_child_sa_with_proposals_we_refuse_is_told_and_named";
    if !privileged(t) {
        return;
    }
    let _serial = serial();
    let (bed, c1, c2) = bed();
    let mut conf = Charon::psk(&bed);
    conf.esp = "aes128-sha1";
    conf.start = "start";
    let charon = bed.charon(&conf.conf(&bed), &[]).expect("charon");
    bed.apply_peer(0, &psk_peer(&bed, "peer"));
    let e = refused(&bed, &c1, &c2, || charon.log(), |e| e.contains("Child SA"));
    assert!(
        e.contains("ESP:AES_CBC_128/HMAC_SHA1_96") && e.contains("we accept ESP:AES_GCM_16"),
        "{e}"
    );
}

/// strait offers the site's pools; charon allows only 10.99.0.0/16 on strait's side
/// and answers TS_UNACCEPTABLE.
#[test]
fn selectors_the_peer_will_not_accept_are_reported() {
    let t = "selectors_the_peer_will_not_accept_are_reported";
    if !privileged(t) {
        return;
    }
    let _serial = serial();
    let (bed, c1, c2) = bed();
    let mut conf = Charon::psk(&bed);
    conf.remote_ts = "10.99.0.0/16";
    let charon = bed.charon(&conf.conf(&bed), &[]).expect("charon");
    bed.apply_peer(0, &psk_peer(&bed, "strait"));
    let e = refused(
        &bed,
        &c1,
        &c2,
        || charon.log(),
        |e| e.contains("TS_UNACCEPTABLE"),
    );
    assert!(e.contains(POOL) && e.contains(LAN), "{e}");
    // The counter sees clear traffic when there is some: with the peer deleted, its
    // networks are no longer held in the datapath and the plain route is taken.
    let (ok, out) = bed.cluster.hosts()[0].netctl(&["ipsec", "peer", "delete", "onprem"]);
    assert!(ok, "{out}");
    wait_until("pings in clear are counted", CONVERGE, POLL, || {
        ping(&c1.ns, LAN_HOST);
        bed.leaked() > 0
    })
    .unwrap();
}

/// A test CA, strait's certificate, and charon's `onprem` certificate for `cn`
/// valid `validity`.
fn pki(cn: &str, validity: Validity) -> Pki {
    let pki = Pki::new();
    pki.root("ca", "/CN=Gateway Test Root/O=Strait", KeyType::P256);
    pki.issue(
        "strait",
        "/CN=gw.dc.strait.test/O=Strait",
        KeyType::P256,
        "ca",
        false,
        "DNS:gw.dc.strait.test",
        Validity::Days(2),
    );
    pki.issue(
        "onprem",
        &format!("/CN={cn}/O=Strait"),
        KeyType::P256,
        "ca",
        false,
        &format!("DNS:{cn}"),
        validity,
    );
    // The agent reads private keys held as a PSK file is: root's, nobody else's.
    std::fs::set_permissions(
        pki.key("strait"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    pki
}

/// charon starts the IKE SA with certificate `onprem` from `pki`, claiming `id`;
/// strait expects `fqdn:vpn.onprem.test`. Returns the refusal.
fn cert_refusal(pki: &Pki, id: &str, matches: impl Fn(&str) -> bool) -> String {
    let (bed, c1, c2) = bed();
    let mut conf = Charon::psk(&bed);
    conf.local = format!("      auth = pubkey\n      certs = onprem.crt\n      id = {id}");
    conf.remote = "      auth = pubkey\n      id = gw.dc.strait.test".into();
    conf.start = "start";
    conf.secrets = String::new();
    let (crt, ca, key) = (pki.crt("onprem"), pki.crt("ca"), pki.key("onprem"));
    let charon = bed
        .charon(
            &conf.conf(&bed),
            &[
                (&crt, "x509/onprem.crt"),
                (&ca, "x509ca/ca.crt"),
                (&key, "private/onprem.key"),
            ],
        )
        .expect("charon");
    let doc = format!(
        "name: onprem\nsite: dc\naddress: {}\ninitiate: peer\nauth:\n  method: cert\n  \
         cert_file: {}\n  key_file: {}\n  ca_file: {}\nremote_id: fqdn:vpn.onprem.test\n\
         local_id: fqdn:gw.dc.strait.test\nremote_networks: [{LAN}]\n",
        bed.gw_addr,
        pki.crt("strait").display(),
        pki.key("strait").display(),
        pki.crt("ca").display()
    );
    bed.apply_peer(0, &doc);
    refused(&bed, &c1, &c2, || charon.log(), matches)
}

/// charon's certificate expired last year: strait refuses it and says when.
#[test]
fn an_expired_certificate_is_refused_with_its_date() {
    let t = "an_expired_certificate_is_refused_with_its_date";
    if !privileged(t) {
        return;
    }
    if let Some(why) = pki::openssl_missing() {
        eprintln!("SKIP {t}: {why}");
        return;
    }
    let _serial = serial();
    let pki = pki(
        "vpn.onprem.test",
        Validity::Between("20200101000000Z", "20210101000000Z"),
    );
    let e = cert_refusal(&pki, "vpn.onprem.test", |e| e.contains("expired"));
    assert!(
        e.contains("certificate expired on 2021-01-01") && e.contains("vpn.onprem.test"),
        "{e}"
    );
}

/// charon's certificate names another gateway (`vpn.other.test`) than the one the
/// peer record expects: strait refuses it and names both.
#[test]
fn a_certificate_for_another_identity_is_refused_naming_both() {
    let t = "a_certificate_for_another_identity_is_refused_naming_both";
    if !privileged(t) {
        return;
    }
    if let Some(why) = pki::openssl_missing() {
        eprintln!("SKIP {t}: {why}");
        return;
    }
    let _serial = serial();
    let pki = pki("vpn.other.test", Validity::Days(2));
    let e = cert_refusal(&pki, "vpn.other.test", |e| e.contains("vpn.other.test"));
    assert!(e.contains("vpn.onprem.test"), "{e}");
}

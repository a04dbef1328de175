//! Reauthentication (RFC 7296 §2.8.3) between strait's speaker and strongSwan's
//! charon (5.9, kernel-libipsec, `make_before_break = yes`), each side doing it: a new
//! IKE SA with a new Child SA comes up beside the old ones, our new Child SA is
//! announced as the old one's replacement, the old IKE SA and its Child SA go, and
//! afterwards both ends hold one IKE SA and one Child SA with the same SPIs and keys.
//! Skips visibly without root or charon.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::auth::Psk;
use strait_ike::speaker::{ChildSa, Event, IkeState, Speaker};

const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";
const KEY: &str = "a pre-shared key of 32 bytes, ok";

/// Reauthentication opens the new IKE SA before the old one goes (5.9's default is
/// break-before-make, which loses traffic between the two).
const MAKE_BEFORE_BREAK: &str = "  make_before_break = yes";

fn swanctl_conf() -> String {
    format!(
        "connections {{
  strait {{
    version = 2
    local_addrs = {THEIRS}
    remote_addrs = {OURS}
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = charon.test
    }}
    remote {{
      auth = psk
      id = strait.test
    }}
    children {{
      net {{
        local_ts = 10.231.2.0/24
        remote_ts = 10.231.1.0/24
        esp_proposals = aes256gcm16
        mode = tunnel
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-strait {{
    secret = \"{KEY}\"
  }}
}}
"
    )
}

/// The bed, charon with make-before-break, and our speaker as strait.test.
fn reauth_bed() -> (Bed, Charon, Driver) {
    let bed = Bed::new(OURS, THEIRS, &["10.231.2.1"]);
    let charon = Charon::start(&bed.theirs, bed.dir(), &swanctl_conf(), MAKE_BEFORE_BREAK);
    let mut config = config(strait_id(), &["10.231.1.0/24"], &["10.231.2.0/24"]);
    config.remote_id = Some(charon_id());
    let psk = || Box::new(Psk::new(KEY.as_bytes().to_vec()));
    let driver = bed.driver(Speaker::new(config, psk(), psk()));
    (bed, charon, driver)
}

/// Runs `swanctl args` in the background while our speaker answers.
fn swanctl_while_driving(
    charon: &Charon,
    driver: &mut Driver,
    args: &[&str],
    done: impl Fn(&[Event]) -> bool,
) {
    let mut cmd = charon.swanctl_command(args).spawn().unwrap();
    let ok = driver.run_until(Duration::from_secs(20), done);
    driver.run_until(Duration::from_secs(1), |_| false);
    let _ = cmd.kill();
    let out = cmd.wait_with_output().unwrap();
    assert!(
        ok,
        "swanctl {args:?}: {}{}\n{:#?}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        driver.events,
        charon.all_output()
    );
}

/// The reauthentication replaced `old` (ours, the first Child SA) by a new Child SA,
/// announced as its replacement with `initiator`; the old one is deleted.
fn replaced(events: &[Event], old: &ChildSa, initiator: bool) -> bool {
    let rekeyed = events.iter().any(|e| {
        matches!(e, Event::ChildSaRekeyed { old_spi_in, initiator: i, .. }
            if *old_spi_in == old.spi_in && *i == initiator)
    });
    let deleted = events
        .iter()
        .any(|e| matches!(e, Event::ChildSaDeleted { spi_in, .. } if *spi_in == old.spi_in));
    rekeyed && deleted
}

/// After the reauthentication, both ends hold one IKE SA and one Child SA, the same
/// ones (by SPI) and with the same keys; nothing was reported down.
fn both_ends_agree(charon: &Charon, driver: &mut Driver, old: &ChildSa, we_initiated: bool) {
    // Let the old IKE SA's Delete finish on both ends.
    let mut done = false;
    for _ in 0..20 {
        driver.run_until(Duration::from_millis(500), |_| false);
        let sas = charon.swanctl(&["--list-sas"]);
        if sas.matches("ESTABLISHED").count() == 1 && driver.speaker.status().len() == 1 {
            done = true;
            break;
        }
    }
    let sas = charon.swanctl(&["--list-sas"]);
    let ours = driver.speaker.status();
    assert!(done, "{ours:#?}\n{sas}\n{}", charon.all_output());
    let ike = &ours[0];
    assert_eq!(ike.state, IkeState::Established);
    assert!(
        sas.contains(&format!("{:016x}_i", ike.spi_i))
            && sas.contains(&format!("{:016x}_r", ike.spi_r)),
        "charon holds our IKE SA {:016x}/{:016x}: {sas}",
        ike.spi_i,
        ike.spi_r
    );
    assert_eq!(ike.children.len(), 1, "{ours:#?}");
    let child = driver.children().last().copied().cloned().unwrap();
    assert_ne!(child.spi_in, old.spi_in);
    assert_eq!(ike.children[0].spi_in, child.spi_in);
    assert_eq!(sas.matches("INSTALLED").count(), 1, "{sas}");
    for spi in [child.spi_in, child.spi_out] {
        assert!(sas.contains(&format!("{spi:08x}")), "{spi:08x}: {sas}");
    }
    assert!(!sas.contains(&format!("{:08x}", old.spi_in)), "{sas}");
    assert_keys_match(charon, &child, we_initiated);
    assert!(
        !driver.events.iter().any(|e| matches!(
            e,
            Event::IkeSaDown { .. } | Event::Failed { .. } | Event::ChildSaFailed { .. }
        )),
        "{:#?}",
        driver.events
    );
}

/// We opened the IKE SA; charon reauthenticates it (`swanctl --rekey --reauth`),
/// initiating the new one.
#[test]
fn charon_reauthenticates_and_we_follow() {
    let t = "charon_reauthenticates_and_we_follow";
    if !can_run(t) {
        return;
    }
    let (_bed, charon, mut driver) = reauth_bed();
    driver.connect(charon_id(), THEIRS);
    assert!(
        driver.run_until(Duration::from_secs(15), child_up),
        "{:?}\n{}",
        driver.events,
        charon.all_output()
    );
    let old = driver.children()[0].clone();
    swanctl_while_driving(
        &charon,
        &mut driver,
        &["--rekey", "--ike", "strait", "--reauth"],
        |e| replaced(e, &old, false),
    );
    both_ends_agree(&charon, &mut driver, &old, false);
}

/// charon opened the IKE SA; we reauthenticate it.
#[test]
fn we_reauthenticate_and_charon_follows() {
    let t = "we_reauthenticate_and_charon_follows";
    if !can_run(t) {
        return;
    }
    let (_bed, charon, mut driver) = reauth_bed();
    swanctl_while_driving(
        &charon,
        &mut driver,
        &["--initiate", "--child", "net", "--timeout", "15"],
        child_up,
    );
    let old = driver.children()[0].clone();
    driver.speaker.reauthenticate(&charon_id(), Instant::now());
    assert!(
        driver.run_until(Duration::from_secs(20), |e| replaced(e, &old, true)),
        "{:#?}\n{}",
        driver.events,
        charon.all_output()
    );
    both_ends_agree(&charon, &mut driver, &old, true);
}

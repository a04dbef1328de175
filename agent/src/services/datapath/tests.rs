//! The services datapath's map handling against the kernel's maps (loaded, attached
//! nowhere): install, replace, read back, remove, a full map, adoption by a new
//! loader. Input checks need no root; the rest does (a `SKIP` line without it).
//! What the programs do with the maps is tested on a real cgroup in
//! `agent/tests/services_socket_lb_privileged.rs`.

use std::time::Duration;

use super::*;
use crate::bpf_test::privileged;
use crate::policy::datapath::PrivateBpffs;

macro_rules! privileged {
    ($name:expr) => {
        if !privileged($name) {
            return;
        }
    };
}

fn frontend() -> Frontend {
    Frontend {
        addr: "10.96.0.10".parse().unwrap(),
        port: 80,
        proto: Protocol::Tcp,
        scope: Scope::Local,
    }
}

fn backend(last: u8) -> Backend {
    Backend {
        addr: format!("10.244.0.{last}").parse().unwrap(),
        port: 8080,
        local: false,
    }
}

/// A table of `m` slots dealing `n` backends round-robin.
fn table(n: u32, m: u32) -> Vec<u32> {
    (0..m).map(|i| i % n).collect()
}

struct Fixture {
    dp: ServicesDatapath,
    // Last: unmounted after the maps are closed.
    bpffs: PrivateBpffs,
}

impl Fixture {
    fn new(slots: Option<u32>) -> Self {
        let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-svct").unwrap();
        let dp = ServicesDatapath::load_sized(bpffs.path(), slots).expect("loading services");
        Self { dp, bpffs }
    }

    fn counts(&self) -> (usize, usize, usize) {
        let s = self.dp.lock();
        (
            s.maps.frontends.keys().count(),
            s.maps.slots.keys().count(),
            s.maps.backends.keys().count(),
        )
    }

    fn backend_ids(&self) -> BTreeMap<Backend, u32> {
        let s = self.dp.lock();
        s.maps
            .backends
            .iter()
            .map(|e| e.unwrap())
            .map(|(id, v)| (maps::value_backend(&v), id))
            .collect()
    }
}

#[test]
fn bad_input_is_refused_whole() {
    let f = frontend();
    let v6 = Backend {
        addr: "fd00::1".parse().unwrap(),
        port: 80,
        local: false,
    };
    /// Backends, table, affinity, and what the refusal says.
    type Case = (Vec<Backend>, Vec<u32>, Option<Duration>, &'static str);
    let cases: Vec<Case> = vec![
        (vec![backend(1)], vec![0, 1], None, "names backend 1"),
        (vec![backend(1)], vec![], None, "both or neither"),
        (vec![], vec![0], None, "both or neither"),
        (vec![backend(1), v6], vec![0, 1], None, "address family"),
        (vec![backend(1)], vec![0; TABLE_MAX + 1], None, "at most"),
        (
            vec![backend(1)],
            vec![0],
            Some(Duration::from_millis(500)),
            "affinity",
        ),
    ];
    for (backends, table, affinity, want) in cases {
        let err = validate(&f, &backends, &table, affinity).unwrap_err();
        assert!(err.contains(want), "{err} (wanted {want:?})");
    }
    assert!(validate(&f, &[], &[], None).is_ok(), "no backends: refused");
    assert!(validate(&f, &[backend(1)], &[0; TABLE_MAX], None).is_ok());
}

#[test]
fn install_replace_read_back_and_remove() {
    privileged!("install_replace_read_back_and_remove");
    let fx = Fixture::new(None);
    let f = frontend();
    let (a, b, c, d) = (backend(1), backend(2), backend(3), backend(4));
    fx.dp.install(&f, &[a, b, c], &table(3, 7), None).unwrap();
    let got = fx.dp.frontends().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f);
    let want: Vec<Option<Backend>> = table(3, 7)
        .iter()
        .map(|&i| Some([a, b, c][i as usize]))
        .collect();
    assert_eq!(got[0].1.slots().collect::<Vec<_>>(), want);
    assert_eq!(got[0].1.affinity, None);
    assert_eq!(fx.counts(), (1, 7, 3));
    let ids = fx.backend_ids();

    // c leaves, d joins, the table shrinks to 5 and affinity comes on.
    let hour = Some(Duration::from_secs(3600));
    fx.dp
        .install(&f, &[a, b, d], &[2, 0, 1, 2, 0], hour)
        .unwrap();
    let got = fx.dp.frontends().unwrap();
    assert_eq!(
        got[0].1.slots().collect::<Vec<_>>(),
        [d, a, b, d, a].map(Some).to_vec()
    );
    assert_eq!(got[0].1.affinity, hour);
    assert_eq!(fx.counts(), (1, 5, 3), "c's entry and slots 5, 6 are gone");
    let new_ids = fx.backend_ids();
    assert_eq!(new_ids[&a], ids[&a], "a stayed: same id");
    assert_eq!(new_ids[&b], ids[&b]);
    assert!(
        !ids.values().any(|&i| i == new_ids[&d]),
        "d does not take c's id in the same install"
    );
    let fid = new_ids[&a] >> 16;
    assert!(new_ids.values().all(|&i| i >> 16 == fid));

    // No backends: the frontend stays, refusing.
    fx.dp.install(&f, &[], &[], None).unwrap();
    let got = fx.dp.frontends().unwrap();
    assert!(got[0].1.backends.is_empty() && got[0].1.table.is_empty());
    assert_eq!(fx.counts(), (1, 0, 0));

    // A second frontend gets another id.
    let g = Frontend { port: 443, ..f };
    fx.dp.install(&g, &[a], &[0, 0, 0], None).unwrap();
    assert_eq!(fx.dp.frontends().unwrap().len(), 2);

    assert!(fx.dp.remove(&f).unwrap());
    assert!(!fx.dp.remove(&f).unwrap(), "removed already");
    assert!(fx.dp.remove(&g).unwrap());
    assert_eq!(fx.counts(), (0, 0, 0));
    assert!(fx.dp.frontends().unwrap().is_empty());
    assert_eq!(
        ServicesDatapath::remove_pins(fx.bpffs.path()).unwrap(),
        abi::MAPS.len()
    );
}

#[test]
fn a_full_slot_map_leaves_every_frontend_as_it_was() {
    privileged!("a_full_slot_map_leaves_every_frontend_as_it_was");
    let fx = Fixture::new(Some(16));
    let f = frontend();
    let (a, b, c) = (backend(1), backend(2), backend(3));
    fx.dp.install(&f, &[a, b], &table(2, 7), None).unwrap();
    let before = fx.dp.frontends().unwrap();

    // Growing to 17 slots needs 10 more keys; 9 fit.
    let err = fx
        .dp
        .install(&f, &[a, b, c], &table(3, 17), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("strait_svc_slots")
            && text.contains("full")
            && text.contains("left as it was"),
        "{text}"
    );
    assert_eq!(fx.dp.frontends().unwrap(), before);
    assert_eq!(
        fx.counts(),
        (1, 7, 2),
        "c and the new slots were taken back"
    );

    // A new frontend that does not fit is not there at all.
    let g = Frontend { port: 443, ..f };
    assert!(fx.dp.install(&g, &[c], &[0; 11], None).is_err());
    assert_eq!(fx.dp.frontends().unwrap(), before);

    // What fits still goes in.
    fx.dp.install(&f, &[a, b, c], &table(3, 13), None).unwrap();
    assert_eq!(fx.counts(), (1, 13, 3));
}

#[test]
fn a_new_loader_adopts_frontends_and_deletes_leftovers() {
    privileged!("a_new_loader_adopts_frontends_and_deletes_leftovers");
    let fx = Fixture::new(None);
    let f = frontend();
    let (a, b) = (backend(1), backend(2));
    fx.dp
        .install(&f, &[a, b], &table(2, 5), Some(Duration::from_secs(60)))
        .unwrap();
    let before = fx.dp.frontends().unwrap();
    let fid = fx.backend_ids()[&a] >> 16;
    let b_id = fx.backend_ids()[&b];
    {
        // An install cut short: a frontend id with backends and slots but no
        // frontend entry, and a slot past a live frontend's table.
        let mut s = fx.dp.lock();
        let stray = fid + 1;
        s.maps
            .backends
            .insert(
                maps::backend_id(stray, 0),
                maps::backend_value(&a, Protocol::Tcp),
                0,
            )
            .unwrap();
        s.maps
            .slots
            .insert(
                SlotKey { id: stray, slot: 0 },
                maps::backend_id(stray, 0),
                0,
            )
            .unwrap();
        s.maps
            .slots
            .insert(SlotKey { id: fid, slot: 5 }, maps::backend_id(fid, 0), 0)
            .unwrap();
        // The stray backend's counter, and a live backend without one (installed
        // by an agent that had no counters).
        s.maps
            .new_backend_counter(maps::backend_id(stray, 0))
            .unwrap();
        s.maps.drop_backend_counter(b_id);
    }
    assert_eq!(fx.counts(), (1, 7, 3));

    let again = ServicesDatapath::load(fx.bpffs.path()).unwrap();
    assert_eq!(again.frontends().unwrap(), before);
    assert_eq!(fx.counts(), (1, 5, 2), "the leftovers are gone");
    let mut counters: Vec<u32> = again
        .lock()
        .maps
        .backend_counts()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    counters.sort_unstable();
    let mut live: Vec<u32> = fx.backend_ids().values().copied().collect();
    live.sort_unstable();
    assert_eq!(counters, live, "a counter per live backend, no other");
    // It knows what it adopted: a replacement keeps the ids, a removal cleans up.
    again.install(&f, &[b], &[0, 0, 0], None).unwrap();
    assert_eq!(fx.backend_ids()[&b] >> 16, fid);
    assert!(again.remove(&f).unwrap());
    assert_eq!(fx.counts(), (0, 0, 0));
}

#[test]
fn a_pinned_map_of_another_layout_is_refused() {
    privileged!("a_pinned_map_of_another_layout_is_refused");
    let fx = Fixture::new(None);
    let other = PrivateBpffs::new(&std::env::temp_dir(), "strait-svct").unwrap();
    // Another build's slot map: here, a map of the wrong sizes under its name.
    let wrong = aya::maps::MapData::from_pin(fx.dp.bpf_dir().join(FRONTENDS)).unwrap();
    wrong.pin(other.path().join(SLOTS)).unwrap();
    let err = ServicesDatapath::load(other.path()).err().expect("refused");
    assert!(err.to_string().contains(SLOTS), "{err}");
    assert!(err.to_string().contains("incompatible"), "{err}");
}

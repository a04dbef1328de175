//! A tiny in-memory network for speaker tests: nodes with a `Speaker` each, datagrams
//! in flight with a latency, a fault hook that can drop, delay, duplicate or corrupt
//! any datagram, and a virtual clock that jumps to the next delivery or deadline.
//! [`charon`] runs strongSwan beside a speaker on real sockets for the interop tests.
//! [`failures`], [`auth_failures`] and [`child_failures`] read the reasons out of the
//! events of either.

#![allow(dead_code)]

pub mod charon;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use strait_ike::auth::{Ed25519Signer, RawKeyVerifier};
use strait_ike::codec::{Identity, Message};
use strait_ike::speaker::{ChildSa, Config, Event, Speaker};

pub type Keys = Arc<Mutex<HashMap<Identity, [u8; 32]>>>;

pub struct Node {
    pub id: Identity,
    pub addr: SocketAddr,
    pub speaker: Speaker,
    /// Every event but Transmit, in order.
    pub events: Vec<Event>,
    pub public_key: [u8; 32],
    pub pkcs8: Vec<u8>,
    /// The keys this node believes its peers have.
    pub keys: Keys,
}

impl Node {
    pub fn children_up(&self) -> Vec<&ChildSa> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaUp(c) => Some(c),
                Event::ChildSaRekeyed { new, .. } => Some(new),
                _ => None,
            })
            .collect()
    }

    /// The Child SAs installed now: up or rekeyed in, not deleted since.
    pub fn installed(&self) -> Vec<ChildSa> {
        let mut live: Vec<ChildSa> = Vec::new();
        for e in &self.events {
            match e {
                Event::ChildSaUp(c) => live.push(c.clone()),
                Event::ChildSaRekeyed { new, .. } => live.push(new.clone()),
                Event::ChildSaDeleted { spi_in, .. } => live.retain(|c| c.spi_in != *spi_in),
                _ => {}
            }
        }
        live
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Datagram {
    pub fn message(&self) -> Option<Message> {
        Message::decode(&self.bytes).ok()
    }
}

pub enum Fault {
    Deliver,
    Drop,
    Duplicate,
    Corrupt(usize),
    Delay(Duration),
}

pub type FaultFn = Box<dyn FnMut(&Datagram) -> Fault>;

pub struct Net {
    pub now: Instant,
    pub start: Instant,
    pub nodes: Vec<Node>,
    in_flight: Vec<(Instant, Datagram)>,
    pub fault: FaultFn,
    pub latency: Duration,
    /// Every datagram sent, before faults.
    pub sent: Vec<Datagram>,
    /// Datagrams sent to an address no node has (a flood's spoofed sources).
    pub lost: usize,
    /// A NAT in front of one node: (private address, public address); the ports are
    /// kept.
    pub nat: Option<(std::net::IpAddr, std::net::IpAddr)>,
}

pub fn keypair() -> (Vec<u8>, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref(), false).unwrap();
    (pkcs8.as_ref().to_vec(), signer.public_key())
}

pub fn node_id(i: usize) -> Identity {
    Identity::Fqdn(format!("node-{}", (b'a' + i as u8) as char))
}

pub fn addr(i: usize) -> SocketAddr {
    format!("192.0.2.{}:500", i + 1).parse().unwrap()
}

/// A test configuration: short retransmission and DPD timers.
pub fn config(i: usize) -> Config {
    let mut c = Config::new(node_id(i));
    c.retransmit_timeout = Duration::from_millis(500);
    c.retransmit_tries = 3;
    c.dpd_interval = Duration::from_secs(10);
    c
}

fn speaker(config: Config, pkcs8: &[u8], keys: &Keys) -> Speaker {
    let lookup = keys.clone();
    let verifier =
        RawKeyVerifier::new(move |id: &Identity| lookup.lock().unwrap().get(id).copied());
    let signer = Ed25519Signer::from_pkcs8(pkcs8, true).unwrap();
    Speaker::new(config, Box::new(signer), Box::new(verifier))
}

impl Net {
    /// Node `i` restarts: a fresh speaker with the same key, its datagrams in flight
    /// lost, its events forgotten.
    pub fn restart(&mut self, i: usize, config: Config) {
        let n = &mut self.nodes[i];
        n.speaker = speaker(config, &n.pkcs8, &n.keys);
        n.events.clear();
        let ip = n.addr.ip();
        self.in_flight.retain(|(_, d)| d.to.ip() != ip);
    }

    /// Nodes with `configs`, each knowing every other's public key.
    pub fn new(configs: Vec<Config>) -> Net {
        let pairs: Vec<(Vec<u8>, [u8; 32])> = configs.iter().map(|_| keypair()).collect();
        let mut nodes = Vec::new();
        for (i, config) in configs.into_iter().enumerate() {
            let keys: Keys = Arc::new(Mutex::new(
                pairs
                    .iter()
                    .enumerate()
                    .map(|(j, (_, pk))| (node_id(j), *pk))
                    .collect(),
            ));
            nodes.push(Node {
                id: config.local_id.clone(),
                addr: addr(i),
                speaker: speaker(config, &pairs[i].0, &keys),
                events: Vec::new(),
                public_key: pairs[i].1,
                pkcs8: pairs[i].0.clone(),
                keys,
            });
        }
        let now = Instant::now();
        Net {
            now,
            start: now,
            nodes,
            in_flight: Vec::new(),
            fault: Box::new(|_| Fault::Deliver),
            latency: Duration::from_millis(10),
            sent: Vec::new(),
            lost: 0,
            nat: None,
        }
    }

    pub fn pair() -> Net {
        Net::new(vec![config(0), config(1)])
    }

    pub fn connect(&mut self, from: usize, to: usize) {
        let (id, local, remote) = (
            self.nodes[to].id.clone(),
            self.nodes[from].addr,
            self.nodes[to].addr,
        );
        let now = self.now;
        self.nodes[from].speaker.connect(id, local, remote, now);
    }

    fn node_at(&self, to: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr.ip() == to.ip())
    }

    /// Move every event out of the speakers; datagrams go through the fault hook.
    pub fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(e) = self.nodes[i].speaker.next_event() {
                match e {
                    Event::Transmit {
                        mut local,
                        remote,
                        bytes,
                    } => {
                        if let Some((private, public)) = self.nat
                            && local.ip() == private
                        {
                            local.set_ip(public);
                        }
                        let d = Datagram {
                            from: local,
                            to: remote,
                            bytes,
                        };
                        self.sent.push(d.clone());
                        let at = self.now + self.latency;
                        match (self.fault)(&d) {
                            Fault::Deliver => self.in_flight.push((at, d)),
                            Fault::Drop => {}
                            Fault::Duplicate => {
                                self.in_flight.push((at, d.clone()));
                                self.in_flight.push((at + self.latency, d));
                            }
                            Fault::Corrupt(i) => {
                                let mut d = d;
                                let i = i % d.bytes.len();
                                d.bytes[i] ^= 0x40;
                                self.in_flight.push((at, d));
                            }
                            Fault::Delay(extra) => self.in_flight.push((at + extra, d)),
                        }
                    }
                    other => self.nodes[i].events.push(other),
                }
            }
        }
    }

    /// Deliver one datagram that is due, if any.
    fn deliver_one(&mut self) -> bool {
        let due = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, (t, _))| *t <= self.now)
            .min_by_key(|(_, (t, _))| *t)
            .map(|(i, _)| i);
        let Some(i) = due else { return false };
        let (_, mut d) = self.in_flight.remove(i);
        let node = self.node_at(d.to);
        if let Some((private, public)) = self.nat
            && d.to.ip() == public
        {
            d.to.set_ip(private);
        }
        match node {
            Some(n) => {
                let now = self.now;
                self.nodes[n]
                    .speaker
                    .handle_datagram(d.to, d.from, &d.bytes, now);
            }
            None => self.lost += 1,
        }
        true
    }

    /// Run until `done` holds (true) or the virtual clock passes `limit` from now
    /// (false).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        // Polls at one instant that deliver nothing: a speaker whose deadline stays
        // in the past would make its caller spin, and this loop hang.
        let mut stuck = 0;
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            if self.deliver_one() {
                stuck = 0;
                continue;
            }
            let next = self
                .in_flight
                .iter()
                .map(|(t, _)| *t)
                .chain(self.nodes.iter().filter_map(|n| n.speaker.next_deadline()))
                .min();
            match next {
                Some(t) if t <= end => {
                    if t <= self.now {
                        stuck += 1;
                        assert!(stuck < 1000, "a speaker's deadline stays in the past");
                    } else {
                        stuck = 0;
                    }
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        n.speaker.poll(now);
                    }
                }
                _ => {
                    self.now = end;
                    return false;
                }
            }
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Inject a datagram as if `from` sent it.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let at = self.now;
        self.in_flight.push((at, Datagram { from, to, bytes }));
    }

    /// Both nodes of a pair have an IKE SA up with a Child SA installed.
    pub fn established(&self) -> bool {
        self.nodes.iter().all(|n| !n.installed().is_empty())
    }
}

/// A's outbound SA is B's inbound one and the other way round, with the same keys.
pub fn assert_mirror(a: &ChildSa, b: &ChildSa) {
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.key_out, b.key_in, "A's out key is B's in key");
    assert_eq!(a.key_in, b.key_out, "A's in key is B's out key");
    assert_ne!(a.key_in, a.key_out);
    assert_eq!(a.cipher, b.cipher);
    assert_eq!(a.esn, b.esn);
    assert_eq!(a.ts_local, b.ts_remote);
    assert_eq!(a.ts_remote, b.ts_local);
}

/// The reasons `pick` finds in `events`, in order.
fn reasons(events: &[Event], pick: impl Fn(&Event) -> Option<&String>) -> Vec<String> {
    events.iter().filter_map(pick).cloned().collect()
}

/// Why an IKE SA failed (`Event::Failed`), each time.
pub fn failures(events: &[Event]) -> Vec<String> {
    reasons(events, |e| match e {
        Event::Failed { reason, .. } => Some(reason),
        _ => None,
    })
}

/// Why the peer's authentication failed (`Event::AuthFailed`), each time.
pub fn auth_failures(events: &[Event]) -> Vec<String> {
    reasons(events, |e| match e {
        Event::AuthFailed { reason, .. } => Some(reason),
        _ => None,
    })
}

/// Why a Child SA failed (`Event::ChildSaFailed`), each time.
pub fn child_failures(events: &[Event]) -> Vec<String> {
    reasons(events, |e| match e {
        Event::ChildSaFailed { reason, .. } => Some(reason),
        _ => None,
    })
}

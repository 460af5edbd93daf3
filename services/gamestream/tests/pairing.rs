//! The five pairing phases against a client that computes exactly what Moonlight computes
//! (spec §3.3), with synthetic time.

use punktfunk_gamestream::http::{Query, hex_decode, hex_encode};
use punktfunk_gamestream::pairing::*;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

const S: u64 = 1_000_000_000;

fn host_identity() -> Arc<HostIdentity> {
    static ID: OnceLock<Arc<HostIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(HostIdentity::generate().unwrap()))
        .clone()
}

/// The client's own RSA identity (Moonlight generates one the same way).
fn client_identity() -> &'static HostIdentity {
    static ID: OnceLock<HostIdentity> = OnceLock::new();
    ID.get_or_init(|| HostIdentity::generate().unwrap())
}

fn q(s: &str) -> Query {
    Query::parse(s).unwrap()
}

fn xml_field(x: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = x.find(&open)? + open.len();
    let end = x[start..].find(&format!("</{name}>"))? + start;
    Some(x[start..end].to_owned())
}

fn reply(step: PairStep) -> String {
    match step {
        PairStep::Reply(x) => x,
        PairStep::AwaitPin(_) => panic!("unexpected AwaitPin"),
    }
}

/// A Moonlight-side pairing run; `client_pin` is what the client displays, `host_pin` what the
/// host user types. Returns whether the client accepted the host's proof after phase 3 and
/// the phase-4 reply.
struct Client {
    uid: &'static str,
    salt: [u8; 16],
    key: [u8; 16],
    client_secret: [u8; 16],
    server_challenge: [u8; 16],
    host_hash: Vec<u8>,
    challenge: [u8; 16],
}

impl Client {
    fn new(uid: &'static str, pin: &str) -> Self {
        let salt = [0x5A; 16];
        Self {
            uid,
            salt,
            key: pairing_key(&salt, pin),
            client_secret: [0x33; 16],
            server_challenge: [0; 16],
            host_hash: vec![],
            challenge: [0x11; 16],
        }
    }

    fn phase1_query(&self) -> Query {
        q(&format!(
            "uniqueid={}&uuid=x&devicename=roth&updateState=1&phrase=getservercert&salt={}&clientcert={}",
            self.uid,
            hex_encode(&self.salt),
            hex_encode(client_identity().cert().pem().as_bytes())
        ))
    }

    fn phase2_query(&self) -> Query {
        q(&format!(
            "uniqueid={}&uuid=x&devicename=roth&updateState=1&clientchallenge={}",
            self.uid,
            hex_encode(&ecb_encrypt(&self.key, &self.challenge))
        ))
    }

    /// Reads phase 2's reply; the real client checks the host hash after phase 3.
    fn take_phase2(&mut self, x: &str) {
        let enc = hex_decode(&xml_field(x, "challengeresponse").unwrap()).unwrap();
        assert_eq!(enc.len(), 48);
        let plain = ecb_decrypt(&self.key, &enc);
        self.host_hash = plain[..32].to_vec();
        self.server_challenge.copy_from_slice(&plain[32..48]);
    }

    fn phase3_query(&self) -> Query {
        let mut h = Sha256::new();
        h.update(self.server_challenge);
        h.update(client_identity().cert().signature());
        h.update(self.client_secret);
        let hash = h.finalize();
        q(&format!(
            "uniqueid={}&serverchallengeresp={}",
            self.uid,
            hex_encode(&ecb_encrypt(&self.key, &hash))
        ))
    }

    /// What Moonlight checks after phase 3: the host's signature ("MITM") and its hash
    /// ("Incorrect PIN").
    fn accepts_phase3(&self, x: &str, host_cert_pem: &[u8]) -> bool {
        let secret = hex_decode(&xml_field(x, "pairingsecret").unwrap()).unwrap();
        let (server_secret, sig) = secret.split_at(16);
        let cert = Certificate::from_pem(host_cert_pem).unwrap();
        assert!(
            cert.verify(server_secret, sig),
            "host signature must verify"
        );
        let mut h = Sha256::new();
        h.update(self.challenge);
        h.update(cert.signature());
        h.update(server_secret);
        h.finalize().as_slice() == self.host_hash.as_slice()
    }

    fn phase4_query(&self) -> Query {
        let mut secret = self.client_secret.to_vec();
        secret.extend(client_identity().sign(&self.client_secret));
        q(&format!(
            "uniqueid={}&clientpairingsecret={}",
            self.uid,
            hex_encode(&secret)
        ))
    }
}

fn start(host: &mut PairingHost, c: &Client, now: u64) -> PendingId {
    match host.handle_pair(now, &c.phase1_query(), None) {
        PairStep::AwaitPin(id) => id,
        PairStep::Reply(x) => panic!("phase 1 answered at once: {x}"),
    }
}

/// Runs phases 1-4; returns (client accepted phase 3, phase-4 reply).
fn run(host: &mut PairingHost, client_pin: &str, host_pin: &str) -> (bool, Option<String>) {
    let mut c = Client::new("0123456789ABCDEF", client_pin);
    let id = start(host, &c, S);
    assert_eq!(host.poll_pending(S, id), PinPoll::Waiting);
    host.submit_pin(2 * S, host_pin).unwrap();
    let PinPoll::Reply(x) = host.poll_pending(2 * S, id) else {
        panic!()
    };
    let pem = hex_decode(&xml_field(&x, "plaincert").unwrap()).unwrap();
    assert_eq!(pem, host_identity().cert().pem().as_bytes());
    let x = reply(host.handle_pair(3 * S, &c.phase2_query(), None));
    c.take_phase2(&x);
    let x = reply(host.handle_pair(3 * S, &c.phase3_query(), None));
    if !c.accepts_phase3(&x, &pem) {
        // Moonlight gives up and unpairs.
        host.handle_unpair(4 * S, c.uid);
        return (false, None);
    }
    (
        true,
        Some(reply(host.handle_pair(4 * S, &c.phase4_query(), None))),
    )
}

fn events(host: &mut PairingHost) -> Vec<PairingEvent> {
    std::iter::from_fn(|| host.poll_event()).collect()
}

#[test]
fn right_pin_pairs_and_pins_the_client_certificate() {
    let mut host = PairingHost::new(host_identity(), PairingPolicy::default());
    let (accepted, x) = run(&mut host, "1234", "1234");
    assert!(accepted);
    let x = x.unwrap();
    assert!(x.contains("<paired>1</paired>"), "{x}");
    let ev = events(&mut host);
    let paired = ev
        .iter()
        .find_map(|e| match e {
            PairingEvent::Paired(p) => Some(p.clone()),
            _ => None,
        })
        .expect("paired event");
    assert_eq!(paired.cert_der, client_identity().cert().der());
    assert_eq!(paired.fingerprint, client_identity().cert().fingerprint());
    assert!(host.pending().is_none());
    // Phase 5 over HTTPS: authorized by the shell's paired set.
    let x = reply(host.handle_pair(
        5 * S,
        &q("uniqueid=0123456789ABCDEF&phrase=pairchallenge"),
        Some(true),
    ));
    assert!(x.contains("<paired>1</paired>"));
    let x = reply(host.handle_pair(5 * S, &q("phrase=pairchallenge"), Some(false)));
    assert!(x.contains("<paired>0</paired>"));
    // Secrets stay out of Debug output.
    let dbg = format!("{host:?} {paired:?} {:?}", host_identity());
    assert!(!dbg.contains("PRIVATE"));
}

#[test]
fn wrong_pin_fails_and_pairs_nothing() {
    let mut host = PairingHost::new(host_identity(), PairingPolicy::default());
    let (accepted, _) = run(&mut host, "1234", "4321");
    assert!(!accepted, "the client must detect the wrong PIN");
    let ev = events(&mut host);
    assert!(!ev.iter().any(|e| matches!(e, PairingEvent::Paired(_))));
    assert!(ev.iter().any(|e| matches!(
        e,
        PairingEvent::Failed {
            reason: FailReason::Abandoned,
            counted: true,
            ..
        }
    )));
    assert!(host.pending().is_none());
}

#[test]
fn host_detects_a_client_that_pushes_on_with_a_wrong_pin() {
    // A client that ignores its own check: the host refuses in phase 4.
    let mut host = PairingHost::new(host_identity(), PairingPolicy::default());
    let mut c = Client::new("dev", "1111");
    let id = start(&mut host, &c, 0);
    host.submit_pin(S, "2222").unwrap();
    let PinPoll::Reply(_) = host.poll_pending(S, id) else {
        panic!()
    };
    let x = reply(host.handle_pair(S, &c.phase2_query(), None));
    c.take_phase2(&x);
    reply(host.handle_pair(S, &c.phase3_query(), None));
    let x = reply(host.handle_pair(S, &c.phase4_query(), None));
    assert!(x.contains("<paired>0</paired>"), "{x}");
    assert!(events(&mut host).iter().any(|e| matches!(
        e,
        PairingEvent::Failed {
            reason: FailReason::WrongPin,
            counted: true,
            ..
        }
    )));
}

#[test]
fn repeated_failures_lock_pairing_then_it_unlocks() {
    let policy = PairingPolicy::default();
    let mut host = PairingHost::new(host_identity(), policy);
    for _ in 0..policy.max_failures {
        let (accepted, _) = run(&mut host, "1234", "9999");
        assert!(!accepted);
    }
    assert!(
        events(&mut host)
            .iter()
            .any(|e| matches!(e, PairingEvent::Locked { .. }))
    );
    let until = host.locked_until(5 * S).expect("locked");
    let c = Client::new("x", "1234");
    let x = reply(host.handle_pair(5 * S, &c.phase1_query(), None));
    assert!(x.contains("<paired>0</paired>"));
    assert!(matches!(
        host.submit_pin(5 * S, "1234"),
        Err(PinError::Locked { .. })
    ));
    assert_eq!(host.poll_timeout(), Some(until));
    host.handle_timeout(until);
    assert!(host.locked_until(until).is_none());
    let (accepted, x) = run_at(&mut host, until);
    assert!(accepted && x.contains("<paired>1</paired>"));
}

fn run_at(host: &mut PairingHost, t: u64) -> (bool, String) {
    let mut c = Client::new("later", "5555");
    let id = start(host, &c, t);
    host.submit_pin(t, "5555").unwrap();
    let PinPoll::Reply(x) = host.poll_pending(t, id) else {
        panic!()
    };
    let pem = hex_decode(&xml_field(&x, "plaincert").unwrap()).unwrap();
    let x = reply(host.handle_pair(t, &c.phase2_query(), None));
    c.take_phase2(&x);
    let x = reply(host.handle_pair(t, &c.phase3_query(), None));
    let ok = c.accepts_phase3(&x, &pem);
    (ok, reply(host.handle_pair(t, &c.phase4_query(), None)))
}

#[test]
fn pin_only_for_a_waiting_pairing_within_its_deadline() {
    let policy = PairingPolicy::default();
    let mut host = PairingHost::new(host_identity(), policy);
    assert_eq!(host.submit_pin(0, "1234"), Err(PinError::NoPendingPairing));
    let c = Client::new("a", "1234");
    let id = start(&mut host, &c, 0);
    assert_eq!(host.submit_pin(0, "12a4"), Err(PinError::BadFormat));
    assert_eq!(host.submit_pin(0, "123"), Err(PinError::BadFormat));
    assert_eq!(host.poll_timeout(), Some(policy.pin_deadline_ns));
    // The deadline passes: the held request fails, the PIN finds nothing, no lockout count.
    assert_eq!(
        host.submit_pin(policy.pin_deadline_ns, "1234"),
        Err(PinError::NoPendingPairing)
    );
    let PinPoll::Reply(x) = host.poll_pending(policy.pin_deadline_ns, id) else {
        panic!()
    };
    assert!(x.contains("<paired>0</paired>"));
    assert!(events(&mut host).iter().any(|e| matches!(
        e,
        PairingEvent::Failed {
            reason: FailReason::TimedOut,
            counted: false,
            ..
        }
    )));
}

#[test]
fn a_second_client_cannot_take_over_or_break_a_waiting_pairing() {
    let mut host = PairingHost::new(host_identity(), PairingPolicy::default());
    let a = Client::new("A", "1234");
    let b = Client::new("B", "1234");
    let _ = start(&mut host, &a, 0);
    let x = reply(host.handle_pair(0, &b.phase1_query(), None));
    assert!(x.contains("<plaincert></plaincert>"), "{x}");
    // B's phase 2 is refused and A's pairing still waits.
    let x = reply(host.handle_pair(0, &b.phase2_query(), None));
    assert!(x.contains("<paired>0</paired>"));
    assert_eq!(host.pending().unwrap().unique_id, "A");
    // A phase out of order (phase 3 before the PIN) ends A's attempt, uncounted.
    reply(host.handle_pair(0, &a.phase3_query(), None));
    assert!(host.pending().is_none());
}

#[test]
fn phase1_over_https_and_malformed_phase1() {
    let mut host = PairingHost::new(host_identity(), PairingPolicy::default());
    let c = Client::new("A", "1234");
    // Accepted over HTTPS too (Sunshine serves /pair on both ports).
    assert!(matches!(
        host.handle_pair(0, &c.phase1_query(), Some(false)),
        PairStep::AwaitPin(_)
    ));
    host.handle_unpair(0, "A");
    for bad in [
        "uniqueid=A&phrase=getservercert&salt=00&clientcert=00",
        "uniqueid=A&phrase=getservercert&salt=000102030405060708090a0b0c0d0e0f&clientcert=2D2D",
        "uniqueid=A&phrase=getservercert",
    ] {
        let x = reply(host.handle_pair(0, &q(bad), None));
        assert!(x.contains("<paired>0</paired>"), "{bad}");
    }
    assert!(host.pending().is_none());
}

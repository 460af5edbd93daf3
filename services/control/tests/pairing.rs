//! PIN pairing between client and host: success, wrong PINs, MITM fingerprints, tampering.

use punktfunk_control::pairing::{
    PairingClient, PairingClientStep, PairingError, PairingHost, PairingHostStep, generate_pin,
    validate_pin,
};
use punktfunk_proto::control::{
    ClientMessage, HostMessage, PairConfirm, PairResult, PairStart, client_message, host_message,
};

const HOST_FP: [u8; 32] = [0xaa; 32];
const CLIENT_FP: [u8; 32] = [0x55; 32];

fn host(pin: &str) -> PairingHost {
    PairingHost::new(pin, HOST_FP, CLIENT_FP, "gaming-pc").unwrap()
}

#[test]
fn success_both_sides_agree() {
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123456", "living-room", CLIENT_FP, HOST_FP).unwrap();
    let challenge = h.on_pair_start(start).unwrap();
    assert_eq!(challenge.spake_message.len(), 33);
    assert_eq!(challenge.host_confirm.len(), 32);
    let confirm = c.on_challenge(challenge).unwrap();
    let paired = h.on_pair_confirm(confirm).unwrap();
    assert_eq!(paired.client_name, "living-room");
    assert_eq!(paired.client_fp, CLIENT_FP);
    let Some(host_message::Msg::PairResult(res)) = h.success_message().msg else {
        panic!("not a PairResult")
    };
    assert!(res.paired);
    let ph = c.on_result(res).unwrap();
    assert_eq!(ph.host_name, "gaming-pc");
    assert_eq!(ph.host_fp, HOST_FP);
    assert!(h.is_finished());
}

#[test]
fn success_via_message_dispatch() {
    let mut h = host("000000");
    let (mut c, start) = PairingClient::start("000000", "deck", CLIENT_FP, HOST_FP).unwrap();
    let PairingHostStep::Reply(ch) = h.on_message(PairingClient::start_message(start)).unwrap()
    else {
        panic!("expected a reply")
    };
    let PairingClientStep::Reply(conf) = c.on_message(ch).unwrap() else {
        panic!("expected a reply")
    };
    let PairingHostStep::Paired { reply, client } = h.on_message(conf).unwrap() else {
        panic!("expected Paired")
    };
    assert_eq!(client.client_name, "deck");
    let PairingClientStep::Paired(ph) = c.on_message(reply).unwrap() else {
        panic!("expected Paired")
    };
    assert_eq!(ph.host_fp, HOST_FP);
}

#[test]
fn wrong_pin_is_detected_by_the_client_first() {
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123457", "x", CLIENT_FP, HOST_FP).unwrap();
    let challenge = h.on_pair_start(start).unwrap();
    assert_eq!(c.on_challenge(challenge), Err(PairingError::WrongPin));
}

#[test]
fn wrong_pin_is_detected_by_the_host() {
    // A client that skips its own check and sends a confirmation derived from a wrong PIN.
    let mut h = host("123456");
    let (mut honest, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let mut h2 = host("654321");
    let ch = h2.on_pair_start(start.clone()).unwrap();
    // The client with the right PIN against a host armed with another PIN fails on its side…
    assert_eq!(honest.on_challenge(ch), Err(PairingError::WrongPin));
    // …and a forged confirmation fails on the host's.
    h.on_pair_start(start).unwrap();
    assert_eq!(
        h.on_pair_confirm(PairConfirm {
            client_confirm: vec![0; 32]
        }),
        Err(PairingError::WrongPin)
    );
    // The attempt is spent: no second try with the same host.
    assert_eq!(
        h.on_pair_confirm(PairConfirm {
            client_confirm: vec![0; 32]
        }),
        Err(PairingError::Finished)
    );
    let (_, again) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    assert_eq!(h.on_pair_start(again), Err(PairingError::Finished));
}

#[test]
fn fingerprint_mismatch_mitm_fails() {
    // The client sees a MITM certificate instead of the host's.
    let mut h = host("111111");
    let (mut c, start) = PairingClient::start("111111", "x", CLIENT_FP, [0x66; 32]).unwrap();
    let ch = h.on_pair_start(start).unwrap();
    assert_eq!(c.on_challenge(ch), Err(PairingError::WrongPin));

    // The host sees a MITM client certificate: its MAC does not verify at the real client.
    let mut h = PairingHost::new("111111", HOST_FP, [0x77; 32], "h").unwrap();
    let (mut c, start) = PairingClient::start("111111", "x", CLIENT_FP, HOST_FP).unwrap();
    let ch = h.on_pair_start(start).unwrap();
    assert_eq!(c.on_challenge(ch), Err(PairingError::WrongPin));
}

#[test]
fn tampered_messages_fail() {
    // Tampered SPAKE2 message from the client.
    let mut h = host("123456");
    let (mut c, mut start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    start.spake_message[5] ^= 1;
    match h.on_pair_start(start) {
        Ok(ch) => assert!(c.on_challenge(ch).is_err()),
        Err(e) => assert!(matches!(e, PairingError::Malformed(_))),
    }

    // Tampered host confirmation.
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let mut ch = h.on_pair_start(start).unwrap();
    ch.host_confirm[0] ^= 0x80;
    assert_eq!(c.on_challenge(ch), Err(PairingError::WrongPin));

    // Tampered host SPAKE2 message.
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let mut ch = h.on_pair_start(start).unwrap();
    ch.spake_message[10] ^= 4;
    assert!(c.on_challenge(ch).is_err());

    // Tampered client confirmation.
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let ch = h.on_pair_start(start).unwrap();
    let mut conf = c.on_challenge(ch).unwrap();
    conf.client_confirm[31] ^= 1;
    assert_eq!(h.on_pair_confirm(conf), Err(PairingError::WrongPin));
}

#[test]
fn sizes_and_names_are_checked() {
    let (_, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    for bad in [vec![], vec![0x41; 32], vec![0x41; 34], vec![0x41; 100_000]] {
        let mut h = host("123456");
        let e = h
            .on_pair_start(PairStart {
                client_name: "x".into(),
                spake_message: bad,
            })
            .unwrap_err();
        assert!(matches!(e, PairingError::Malformed(_)), "{e:?}");
    }
    for bad_name in [String::new(), "a".repeat(129), "bell\u{7}".into()] {
        let mut h = host("123456");
        assert_eq!(
            h.on_pair_start(PairStart {
                client_name: bad_name,
                spake_message: start.spake_message.clone(),
            }),
            Err(PairingError::InvalidName)
        );
    }
    // Wrong side byte: a client message ('A') reflected back to the client.
    let (mut c, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    assert!(matches!(
        c.on_challenge(punktfunk_proto::control::PairChallenge {
            spake_message: start.spake_message,
            host_confirm: vec![0; 32],
        }),
        Err(PairingError::Malformed(_))
    ));
    // Short confirmation.
    let mut h = host("123456");
    let (mut c, start) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let ch = h.on_pair_start(start).unwrap();
    c.on_challenge(ch).unwrap();
    assert!(matches!(
        h.on_pair_confirm(PairConfirm {
            client_confirm: vec![0; 31]
        }),
        Err(PairingError::Malformed(_))
    ));
}

#[test]
fn out_of_order_and_foreign_messages() {
    let mut h = host("123456");
    assert!(matches!(
        h.on_pair_confirm(PairConfirm {
            client_confirm: vec![0; 32]
        }),
        Err(PairingError::Unexpected(_))
    ));
    let mut h = host("123456");
    assert!(matches!(
        h.on_message(ClientMessage {
            msg: Some(client_message::Msg::Goodbye(Default::default()))
        }),
        Err(PairingError::Unexpected(_))
    ));
    let mut h = host("123456");
    assert!(h.on_message(ClientMessage { msg: None }).is_err());
    // A host refusal reaches the client as Rejected with the host's words.
    let (mut c, _) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let refusal = PairingError::WrongPin.to_host_message("h");
    assert!(matches!(
        c.on_message(refusal),
        Err(PairingError::Rejected(s)) if s.contains("wrong PIN")
    ));
    // paired=true before any challenge is not accepted.
    let (mut c, _) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    assert!(
        c.on_result(PairResult {
            paired: true,
            error: String::new(),
            host_name: "h".into()
        })
        .is_err()
    );
    let (mut c, _) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    assert!(c.on_message(HostMessage { msg: None }).is_err());
}

#[test]
fn pin_validation_and_generation() {
    for ok in ["000000", "123456", "999999"] {
        validate_pin(ok).unwrap();
    }
    for bad in [
        "",
        "12345",
        "1234567",
        "12345a",
        "١٢٣٤٥٦",
        " 12345",
        "12 456",
    ] {
        assert_eq!(validate_pin(bad), Err(PairingError::InvalidPin), "{bad:?}");
        assert!(PairingHost::new(bad, HOST_FP, CLIENT_FP, "h").is_err());
        assert!(PairingClient::start(bad, "x", CLIENT_FP, HOST_FP).is_err());
    }
    let mut first_digits = [0u32; 10];
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..2000 {
        let p = generate_pin();
        validate_pin(&p).unwrap();
        first_digits[(p.as_bytes()[0] - b'0') as usize] += 1;
        distinct.insert(p);
    }
    // Leading zeros are kept and every leading digit occurs (≈200 each).
    assert!(first_digits.iter().all(|&n| n > 100), "{first_digits:?}");
    assert!(distinct.len() > 1990);
}

#[test]
fn a_host_refusal_names_the_refusal_once() {
    // The host wraps its reason in Rejected; the client wraps what arrives in Rejected again.
    let refusal = PairingError::Rejected("pairing is not armed on the host".into());
    let (mut c, _) = PairingClient::start("123456", "x", CLIENT_FP, HOST_FP).unwrap();
    let shown = match c.on_message(refusal.to_host_message("h")) {
        Err(e @ PairingError::Rejected(_)) => e.to_string(),
        other => panic!("expected Rejected, got {other:?}"),
    };
    assert_eq!(
        shown,
        "the host refused pairing: pairing is not armed on the host"
    );
    // Other errors travel with their own words.
    assert_eq!(
        PairingError::WrongPin.host_words(),
        PairingError::WrongPin.to_string()
    );
}

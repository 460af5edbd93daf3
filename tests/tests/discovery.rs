//! Discovery across two network namespaces: the real transport advertises `_punktfunk._udp`
//! in one, `punktfunk-client discover` finds it from the other with the right TXT values.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use punktfunk_tests::bin;
use punktfunk_testsupport::netlab::{NetnsPair, Side};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_client_in_another_namespace_discovers_the_host_with_its_txt_values() {
    let pair =
        NetnsPair::create(&format!("disc{}", std::process::id() % 100_000)).unwrap_or_else(|e| {
            panic!(
                "this test needs root, iproute2 and nftables (`just setup`; CI runs as root): {e}"
            )
        });
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("transport.log");
    let logf = std::fs::File::create(&log).unwrap();
    let host = Kill(
        Command::new("ip")
            .args(["netns", "exec", pair.name(Side::A)])
            .arg(bin("punktfunk-transport"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_RUNTIME_DIR", root.path())
            .env("XDG_CONFIG_HOME", root.path())
            .env("PUNKTFUNK_HOST_NAME", "living room")
            .env("PUNKTFUNK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap(),
    );
    // The host's fingerprint, as it logs it at start.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fingerprint = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(fp) = text
            .lines()
            .find(|l| l.contains("host identity"))
            .and_then(|l| l.split("fingerprint=").nth(1))
            .map(|s| s.chars().take(64).collect::<String>())
            && text.contains("ready")
        {
            break fp;
        }
        assert!(
            Instant::now() < deadline,
            "transport did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(fingerprint.len(), 64);

    let client_dir = root.path().join("client");
    let mut found = None;
    for _ in 0..3 {
        let out = Command::new("ip")
            .args(["netns", "exec", pair.name(Side::B)])
            .arg(bin("punktfunk-client"))
            .arg("--config-dir")
            .arg(&client_dir)
            .args(["discover", "--json", "--timeout-ms", "3000"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "discover failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        found = v["hosts"].as_array().and_then(|hosts| {
            hosts
                .iter()
                .find(|h| h["fingerprint_hex"] == fingerprint.as_str())
                .cloned()
        });
        if found.is_some() {
            break;
        }
    }
    let h = found.unwrap_or_else(|| {
        panic!(
            "the client in namespace B never saw the host; transport log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(h["instance"], "living room", "{h}");
    assert_eq!(h["port"], 9777, "{h}");
    assert_eq!(h["txt"]["proto"], "punktfunk/1", "{h}");
    assert_eq!(
        h["txt"]["pair"], "required",
        "pairing is required by default: {h}"
    );
    assert_eq!(h["pairing"], "required", "{h}");
    assert_eq!(h["txt"]["fp"], fingerprint.as_str(), "{h}");
    assert_eq!(h["txt"]["id"], &fingerprint[..16], "{h}");
    let a = pair.addr(Side::A).to_string();
    assert!(
        h["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == a.as_str()),
        "an address of namespace A ({a}): {h}"
    );
    drop(host);
}

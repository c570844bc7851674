//! Tests through real plugins: the built `tcp` and `echo` cdylibs, a Rust fixture that
//! panics, and C plugins compiled here with `cc`.
//!
//! The cdylibs are built on first use by running `cargo build -p receptor-plugin-tcp -p
//! receptor-plugin-echo -p receptor-plugin-fixture-faulty` into the target folder of the
//! running test binary (a no-op when they are up to date), so `cargo test -p
//! receptor-core plugin_host` and `cargo nextest run` both work without a prior build.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::*;
use crate::mesh::Framing;
use crate::work::worktype::{ReattachRequest, StartRequest, UnitState, WorkProgress};

/// The folder holding the test binary's sibling artifacts (`target/<profile>`).
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The folder of this build's plugin libraries (see `receptor_tests::binaries::plugin_dir`).
fn plugin_dir() -> PathBuf {
    receptor_tests::binaries::plugin_dir().expect("plugin libraries of this build")
}

fn cdylib(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("lib{name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Compiles a C plugin with the SDK's header into `out`.
fn compile_c(source: &Path, out: &Path, defines: &[&str]) -> PathBuf {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    compile_c_against(source, &sdk.join("include"), out, "", defines)
}

/// Compiles a C plugin against the header in `include` into `out`, the library's name
/// ending with `suffix`.
fn compile_c_against(
    source: &Path,
    include: &Path,
    out: &Path,
    suffix: &str,
    defines: &[&str],
) -> PathBuf {
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("source name");
    let lib = out.join(format!("lib{stem}{suffix}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(cc)
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
        ])
        .arg("-I")
        .arg(include)
        .args(defines)
        .arg(source)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("run the C compiler");
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    lib
}

fn c_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugin-sdk/fixtures/c")
        .join(name)
}

fn load(paths: &[PathBuf]) -> Result<PluginHost, PluginError> {
    PluginHost::load(&LoadOptions {
        paths: paths.to_vec(),
        default_search: false,
        ..LoadOptions::default()
    })
}

/// A port the kernel just handed out on 127.0.0.1, free again for the listener.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn next_conn(instance: &mut BackendInstance, within: Duration) -> BackendConnection {
    tokio::time::timeout(within, instance.connections.recv())
        .await
        .expect("a connection in time")
        .expect("the connection stream is open")
}

fn nodelay(fd: &impl AsRawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && value != 0
}

fn stream(conn: BackendConnection) -> tokio::net::TcpStream {
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(conn.fd))
        .expect("non-blocking tcp stream")
}

fn tcp_pair(port: u16) -> (PluginHost, BackendInstance, BackendInstance) {
    let host = load(&[cdylib("receptor_tcp")]).expect("load tcp plugin");
    // Values as the command line delivers them: strings.
    let listener = host
        .start_backend(
            "tcp-listener",
            &json!({"bindaddr": "127.0.0.1", "port": port.to_string(), "cost": "2.5", "nodecost": {"x": 1}}),
        )
        .expect("start listener");
    let dialer = host
        .start_backend(
            "tcp-peer",
            &json!({"address": format!("127.0.0.1:{port}"), "redial": "yes", "allowedpeers": ["x"]}),
        )
        .expect("start dialer");
    (host, listener, dialer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_and_dialer_hand_over_connected_sockets() {
    let (host, mut listener, mut dialer) = tcp_pair(free_port());
    assert_eq!(
        host.claims("tcp-peer").map(|(t, p)| (t, p.name.as_str())),
        Some((ClaimType::Backend, "tcp"))
    );

    let out = next_conn(&mut dialer, Duration::from_secs(10)).await;
    let inc = next_conn(&mut listener, Duration::from_secs(10)).await;
    assert_eq!((out.framing, out.inbound), (Framing::Len16Le, false));
    assert_eq!((inc.framing, inc.inbound), (Framing::Len16Le, true));
    assert!(out.peer.starts_with("127.0.0.1:"), "{}", out.peer);
    assert!(
        nodelay(&out.fd) && nodelay(&inc.fd),
        "TCP_NODELAY must be set on both ends"
    );
    assert_ne!(out.token, inc.token);

    let (mut a, mut b) = (stream(out), stream(inc));
    a.write_all(b"\x05\x00hello").await.unwrap();
    let mut buf = [0u8; 7];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x05\x00hello");
    b.write_all(b"back").await.unwrap();
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_keeps_one_session_and_redials_after_it_closed() {
    let (_host, mut listener, mut dialer) = tcp_pair(free_port());
    let first = next_conn(&mut dialer, Duration::from_secs(10)).await;
    let accepted = next_conn(&mut listener, Duration::from_secs(10)).await;
    let token = first.token;
    drop(first);
    drop(accepted);
    // The socket is gone but the host has not said the session ended: no redial.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), dialer.connections.recv())
            .await
            .is_err(),
        "the dialer must wait for session_closed"
    );
    let closed_at = Instant::now();
    dialer.handle.session_closed(token);
    let second = next_conn(&mut dialer, Duration::from_secs(15)).await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "redial after {waited:?}, receptor waits 5 s"
    );
    assert_ne!(second.token, token);
    let again = next_conn(&mut listener, Duration::from_secs(5)).await;
    assert!(again.inbound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_listener_closes_its_port_and_ends_its_stream() {
    let port = free_port();
    let host = load(&[cdylib("receptor_tcp")]).unwrap();
    let mut listener = host
        .start_backend(
            "tcp-listener",
            &json!({"bindaddr": "127.0.0.1", "port": port}),
        )
        .unwrap();
    let probe = std::net::TcpStream::connect(("127.0.0.1", port)).expect("listener accepts");
    let conn = next_conn(&mut listener, Duration::from_secs(10)).await;
    assert!(conn.inbound);
    listener.handle.stop();
    assert!(listener.handle.is_stopped());
    let end = tokio::time::timeout(Duration::from_secs(10), listener.connections.recv()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after stop");
    // The accepted session is the daemon's and survives the stop.
    let mut s = stream(conn);
    drop(probe);
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    // The port is closed once the accept thread has gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port still open after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn backend_config_errors_name_the_key() {
    let host = load(&[cdylib("receptor_tcp")]).unwrap();
    let err = host
        .start_backend("tcp-listener", &json!({"port": "http"}))
        .unwrap_err()
        .to_string();
    // The plugin describes its fields: the node checks them before the plugin runs.
    assert_eq!(err, "tcp-listener: port: expected an integer, got \"http\"");
    let err = host
        .start_backend("tcp-peer", &json!({"redial": true}))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "tcp-peer: address (string) is required");
    let err = host
        .start_backend("tcp-peer", &json!({"address": "a:1", "colour": "red"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key \"colour\""), "{err}");
}

fn unit_files(dir: &Path, payload: &[u8]) -> (File, File, PathBuf) {
    std::fs::write(dir.join("stdin"), payload).unwrap();
    let stdin = File::open(dir.join("stdin")).unwrap();
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout"))
        .unwrap();
    (stdin, stdout, dir.join("stdout"))
}

fn initial() -> (watch::Sender<WorkProgress>, watch::Receiver<WorkProgress>) {
    watch::channel(WorkProgress {
        state: UnitState::Pending,
        detail: "Unit Created".to_owned(),
        extra: None,
    })
}

async fn final_progress(rx: &mut watch::Receiver<WorkProgress>) -> WorkProgress {
    let done = |p: &WorkProgress| {
        matches!(
            p.state,
            UnitState::Succeeded | UnitState::Failed | UnitState::Canceled
        )
    };
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(done))
        .await
        .expect("a final state in time")
        .expect("progress channel open")
        .clone()
}

fn start_request(id: &str, dir: &Path, stdin: File, stdout: File) -> StartRequest {
    StartRequest {
        unit_id: id.to_owned(),
        unit_dir: dir.to_path_buf(),
        stdin,
        stdout,
        params: String::new(),
        extra_params: BTreeMap::from([("key".to_owned(), "value".to_owned())]),
    }
}

#[tokio::test]
async fn echo_unit_copies_stdin_to_stdout_and_succeeds() {
    let host = load(&[cdylib("receptor_echo")]).unwrap();
    let wt = host
        .work_type(
            "echo-worktype",
            &json!({"worktype": "echoer", "allowruntimeparams": "true"}),
        )
        .unwrap();
    assert_eq!(
        (wt.name(), wt.allow_runtime_params(), wt.verify_signature()),
        ("echoer", true, false)
    );
    let default = host.work_type("echo-worktype", &json!({})).unwrap();
    assert_eq!(default.name(), "echo");

    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (stdin, stdout, out_path) = unit_files(dir.path(), &payload);
    let (tx, mut rx) = initial();
    let handle = wt
        .start(start_request("unit1", dir.path(), stdin, stdout), tx)
        .unwrap();
    let last = final_progress(&mut rx).await;
    assert_eq!(
        (last.state, last.detail.as_str(), last.extra),
        (UnitState::Succeeded, "exit status 0", None)
    );
    assert_eq!(std::fs::read(out_path).unwrap(), payload);
    // Cancelling a finished unit is harmless and changes nothing.
    handle.cancel().unwrap();
    drop(handle);
    assert_eq!(rx.borrow().state, UnitState::Succeeded);
}

#[tokio::test]
async fn echo_unit_can_be_cancelled() {
    let host = load(&[cdylib("receptor_echo")]).unwrap();
    let wt = host.work_type("echo-worktype", &json!({})).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A pipe as stdin keeps the unit running until we write.
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: pipe2 succeeded; the descriptor is owned once.
    let stdin = unsafe { File::from_raw_fd(fds[0]) };
    // SAFETY: likewise.
    let mut writer = unsafe { File::from_raw_fd(fds[1]) };
    let (_, stdout, out_path) = unit_files(dir.path(), b"");
    let (tx, mut rx) = initial();
    let handle = wt
        .start(start_request("unit2", dir.path(), stdin, stdout), tx)
        .unwrap();
    writer.write_all(b"first").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&out_path).unwrap().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "echo never copied the first chunk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rx.borrow().state, UnitState::Running);
    handle.cancel().unwrap();
    writer.write_all(b"second").unwrap();
    let last = final_progress(&mut rx).await;
    assert_eq!(
        (last.state, last.detail.as_str()),
        (UnitState::Canceled, "Canceled")
    );
}

#[tokio::test]
async fn echo_cannot_reattach() {
    let host = load(&[cdylib("receptor_echo")]).unwrap();
    let wt = host.work_type("echo-worktype", &json!({})).unwrap();
    let (tx, _rx) = initial();
    let err = wt
        .reattach(
            ReattachRequest {
                unit_id: "unit3".to_owned(),
                unit_dir: PathBuf::from("/nonexistent"),
                extra: Some(json!({"Pid": 1})),
            },
            tx,
        )
        .err()
        .expect("echo cannot re-attach")
        .to_string();
    assert!(
        err.contains("cannot re-attach") && err.contains("unit3"),
        "{err}"
    );
}

#[test]
fn wrong_abi_major_is_refused_naming_file_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c(&c_fixture("abi_v2_descriptor.c"), dir.path(), &[]);
    let err = load(std::slice::from_ref(&lib)).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::AbiMismatch {
                plugin_major: 2,
                host_major: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&lib.display().to_string())
            && msg.contains("ABI 2.0")
            && msg.contains(&format!("ABI 1.{}", HOST_ABI.1)),
        "{msg}"
    );

    let lib = compile_c(&c_fixture("entry_v2_only.c"), dir.path(), &[]);
    let err = load(std::slice::from_ref(&lib)).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::AbiMismatch {
                plugin_major: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&lib.display().to_string()));
}

#[tokio::test]
async fn panics_in_plugin_calls_become_errors_and_the_host_keeps_running() {
    let host = load(&[cdylib("faulty_fixture"), cdylib("receptor_echo")]).unwrap();
    let err = host
        .work_type("faulty-worktype", &json!({"panic": "create"}))
        .err()
        .expect("create panics");
    assert!(
        err.to_string()
            .contains("plugin faulty: faulty-worktype: plugin panicked: boom in create"),
        "{err}"
    );
    let err = host
        .start_backend("faulty-backend", &json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("boom in backend start"), "{err}");

    let faulty = host.work_type("faulty-worktype", &json!({})).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stdin, stdout, _) = unit_files(dir.path(), b"x");
    let (tx, rx) = initial();
    let err = faulty
        .start(start_request("unit4", dir.path(), stdin, stdout), tx)
        .err()
        .expect("start panics")
        .to_string();
    assert!(
        err.contains("panicked") && err.contains("boom in start"),
        "{err}"
    );
    // The plugin released its progress reference while unwinding.
    assert!(rx.has_changed().is_err(), "progress sender dropped");

    // Still running: another plugin works.
    let echo = host.work_type("echo-worktype", &json!({})).unwrap();
    let (stdin, stdout, out) = unit_files(dir.path(), b"still alive");
    let (tx, mut rx) = initial();
    let _h = echo
        .start(start_request("unit5", dir.path(), stdin, stdout), tx)
        .unwrap();
    assert_eq!(final_progress(&mut rx).await.state, UnitState::Succeeded);
    assert_eq!(std::fs::read(out).unwrap(), b"still alive");
}

#[test]
fn unclaimed_section_lists_what_is_available() {
    let host = load(&[cdylib("receptor_tcp"), cdylib("receptor_echo")]).unwrap();
    let kinds: Vec<&str> = host.section_kinds().collect();
    assert_eq!(kinds, ["echo-worktype", "tcp-listener", "tcp-peer"]);
    let msg = host.require("udp-peer").unwrap_err().to_string();
    for needle in [
        "\"udp-peer\"",
        "echo-worktype, tcp-listener, tcp-peer",
        "tcp 0.1.0",
        "echo 0.1.0",
        "libreceptor_tcp.so",
        "searched: ",
        "(configuration)",
    ] {
        assert!(msg.contains(needle), "{needle} missing in: {msg}");
    }
    assert_eq!(host.require("TCP-Peer").unwrap(), ClaimType::Backend);
    let err = host.start_backend("echo-worktype", &json!({})).unwrap_err();
    assert!(matches!(err, PluginError::WrongClaimType { .. }), "{err:?}");
    assert!(host.work_type("tcp-peer", &json!({})).is_err());
    let empty = load(&[]).unwrap();
    let msg = empty.require("tcp-peer").unwrap_err().to_string();
    assert!(
        msg.contains("handle: none") && msg.contains("loaded: none"),
        "{msg}"
    );
}

#[test]
fn the_same_plugin_twice_is_refused_and_folders_load_every_library() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libtcp_copy.so");
    std::fs::copy(cdylib("receptor_tcp"), &copy).unwrap();
    let err = load(&[cdylib("receptor_tcp"), copy]).unwrap_err();
    assert!(
        matches!(err, PluginError::DuplicatePlugin { .. }),
        "{err:?}"
    );

    std::fs::copy(cdylib("receptor_echo"), dir.path().join("libecho_copy.so")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a plugin").unwrap();
    let host = load(&[dir.path().to_path_buf()]).unwrap();
    let names: Vec<&str> = host.plugins().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["echo", "tcp"]);
    // The same file named twice is loaded once.
    let host = load(&[cdylib("receptor_tcp"), cdylib("receptor_tcp")]).unwrap();
    assert_eq!(host.plugins().len(), 1);

    let err = load(&[dir.path().join("missing.so")]).unwrap_err();
    assert!(matches!(err, PluginError::Path { .. }), "{err:?}");
    let err = load(&[dir.path().join("notes.txt")]).unwrap_err();
    assert!(matches!(err, PluginError::Load { .. }), "{err:?}");
}

#[test]
fn executable_folder_only_offers_receptor_plugins() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "libreceptor_tcp.so",
        "libfaulty_fixture.so",
        "libreceptor_echo.so",
        "receptor",
        "libreceptor_x.rlib",
    ] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let names = |origin| {
        loader::plugin_files(dir.path(), origin)
            .unwrap()
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(loader::Origin::ExeDir),
        ["libreceptor_echo.so", "libreceptor_tcp.so"]
    );
    assert_eq!(
        names(loader::Origin::Config),
        [
            "libfaulty_fixture.so",
            "libreceptor_echo.so",
            "libreceptor_tcp.so"
        ]
    );
    let skipped = loader::plugin_files(dir.path(), loader::Origin::ExeDir)
        .unwrap()
        .skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0.ends_with("libfaulty_fixture.so"));
    assert!(skipped[0].1.contains("libreceptor_*"), "{}", skipped[0].1);
    let search = default_search_path();
    assert!(search.contains(&PathBuf::from("/usr/lib/receptor/plugins")));
    assert!(search.contains(&artifact_dir().join("deps")));
}

fn c_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c-plugin/uppercase.c")
}

#[tokio::test]
async fn c_plugin_runs_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c(&c_example(), dir.path(), &[]);
    let host = load(&[lib]).unwrap();
    assert_eq!(host.plugins()[0].name, "uppercase");
    let err = host
        .work_type("uppercase-worktype", &json!({"worktype": ["a"]}))
        .err()
        .expect("bad worktype");
    assert!(
        err.to_string()
            .contains("uppercase-worktype: worktype: expected a string, got a list"),
        "{err}"
    );
    let err = host
        .work_type("uppercase-worktype", &json!({"worktype": ""}))
        .err()
        .expect("empty worktype");
    assert!(
        err.to_string().contains("expected a non-empty name"),
        "{err}"
    );
    let err = host
        .work_type("uppercase-worktype", &json!({"wrktype": "x"}))
        .err()
        .expect("typo");
    assert!(
        err.to_string().contains("did you mean \"worktype\""),
        "{err}"
    );
    let wt = host
        .work_type("uppercase-worktype", &json!({"worktype": "shout"}))
        .unwrap();
    assert_eq!(wt.name(), "shout");
    let (stdin, stdout, out) = unit_files(dir.path(), b"hello, world\n");
    let (tx, mut rx) = initial();
    let _unit = wt
        .start(start_request("unit6", dir.path(), stdin, stdout), tx)
        .unwrap();
    let last = final_progress(&mut rx).await;
    assert_eq!(
        (last.state, last.detail.as_str()),
        (UnitState::Succeeded, "uppercased")
    );
    assert_eq!(std::fs::read(out).unwrap(), b"HELLO, WORLD\n");
    let (tx, _rx) = initial();
    let err = wt
        .reattach(
            ReattachRequest {
                unit_id: "unit6".to_owned(),
                unit_dir: dir.path().to_path_buf(),
                extra: None,
            },
            tx,
        )
        .err()
        .expect("cannot reattach")
        .to_string();
    assert!(err.contains("cannot be resumed"), "{err}");
}

#[test]
fn two_plugins_claiming_one_section_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c(
        &c_example(),
        dir.path(),
        &["-DSECTION_KIND=\"echo-worktype\""],
    );
    let err = load(&[cdylib("receptor_echo"), lib]).unwrap_err();
    assert!(matches!(err, PluginError::DuplicateClaim { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"echo-worktype\"") && msg.contains("echo (") && msg.contains("uppercase ("),
        "{msg}"
    );
}

/// Builds `examples/rust-plugin` (its own workspace) into its own target folder.
fn rust_example() -> PathBuf {
    let dir = artifact_dir();
    let target = dir
        .parent()
        .expect("target folder")
        .join("example-rust-plugin");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust-plugin/Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build for the example plugin");
    assert!(status.success(), "building examples/rust-plugin failed");
    target.join("debug/libreceptor_wordcount.so")
}

#[tokio::test]
async fn standalone_rust_plugin_runs_a_unit() {
    let host = load(&[rust_example()]).unwrap();
    let desc = host.section_desc("wordcount-worktype").unwrap();
    assert_eq!(desc.bare_field.as_deref(), Some("worktype"));
    let err = host
        .work_type("wordcount-worktype", &json!({"workype": "wc"}))
        .err()
        .expect("typo refused");
    assert!(
        err.to_string().contains("did you mean \"worktype\""),
        "{err}"
    );
    // A bare command-line value goes to the described field.
    let wt = host
        .work_type("wordcount-worktype", &json!({"": "wc"}))
        .unwrap();
    assert_eq!(wt.name(), "wc");
    let dir = tempfile::tempdir().unwrap();
    let (stdin, stdout, out) = unit_files(dir.path(), b"some text\nand more\n");
    let (tx, mut rx) = initial();
    let _unit = wt
        .start(start_request("unit7", dir.path(), stdin, stdout), tx)
        .unwrap();
    let last = final_progress(&mut rx).await;
    assert_eq!(last.state, UnitState::Succeeded, "{last:?}");
    assert_eq!(
        last.extra,
        Some(json!({"Lines": 2, "Words": 4, "Bytes": 19}))
    );
    assert_eq!(std::fs::read(out).unwrap(), b"2 4 19\n");
}

/// Log lines plugins sent through the host (`plugin: message`), captured process-wide.
fn plugin_logs() -> &'static std::sync::Mutex<Vec<String>> {
    use tracing_subscriber::layer::SubscriberExt;

    static LOGS: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();

    struct Capture;
    struct Fields(String, String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "message" => self.1 = format!("{value:?}"),
                "plugin" => self.0 = format!("{value:?}"),
                _ => {}
            }
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "receptor::plugin" {
                let mut f = Fields(String::new(), String::new());
                event.record(&mut f);
                let logs = LOGS.get_or_init(Default::default);
                logs.lock().unwrap().push(format!("{}: {}", f.0, f.1));
            }
        }
    }
    INSTALLED.get_or_init(|| {
        let _ =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture));
    });
    LOGS.get_or_init(Default::default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_retries_after_a_failed_dial_and_logs_through_the_host() {
    let logs = plugin_logs();
    let port = free_port();
    let host = load(&[cdylib("receptor_tcp")]).unwrap();
    let mut dialer = host
        .start_backend("tcp-peer", &json!({"address": format!("127.0.0.1:{port}")}))
        .unwrap();
    // Nothing listens yet: wait for the plugin to log its failed dial.
    let failure = format!("tcp: cannot connect to 127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs.lock().unwrap().iter().any(|l| l.starts_with(&failure)) {
        assert!(
            Instant::now() < deadline,
            "no failed dial logged: {:?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed_at = Instant::now();
    let mut listener = host
        .start_backend(
            "tcp-listener",
            &json!({"bindaddr": "127.0.0.1", "port": port}),
        )
        .unwrap();
    let conn = next_conn(&mut dialer, Duration::from_secs(15)).await;
    let waited = failed_at.elapsed();
    assert!(!conn.inbound);
    assert!(
        waited >= Duration::from_millis(4000) && waited < Duration::from_secs(10),
        "redialled {waited:?} after the failure, receptor waits 5 s"
    );
    assert!(
        next_conn(&mut listener, Duration::from_secs(5))
            .await
            .inbound
    );
    assert!(logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == &format!("tcp: listening on 127.0.0.1:{port}")));
}

#[test]
fn host_types_can_be_shared_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<PluginHost>();
    send_sync::<BackendHandle>();
    send::<BackendInstance>();
    send::<BackendConnection>();
}

/// Whether `path` is mapped into this process.
fn is_mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.contains(path.to_str().expect("utf-8 path"))
}

#[tokio::test]
async fn unneeded_default_path_plugins_are_unloaded_and_come_back_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = dir.path().join("libtcp_copy.so");
    let echo = dir.path().join("libecho_copy.so");
    std::fs::copy(cdylib("receptor_tcp"), &tcp).unwrap();
    std::fs::copy(cdylib("receptor_echo"), &echo).unwrap();
    // Only this test loads the default search path; each test runs in its own process
    // under nextest.
    std::env::set_var(loader::PLUGIN_PATH_ENV, dir.path());
    let host = PluginHost::load(&LoadOptions {
        paths: Vec::new(),
        default_search: true,
        ..LoadOptions::default()
    })
    .unwrap();
    assert!(is_mapped(&tcp) && is_mapped(&echo));

    host.unload_unused(["TCP-Listener"]);
    assert!(is_mapped(&tcp), "a needed plugin stays");
    assert!(!is_mapped(&echo), "an unneeded plugin is unloaded");
    // Still known: its sections are claimed and listed.
    assert_eq!(host.require("echo-worktype").unwrap(), ClaimType::WorkType);
    let msg = host.require("no-such-section").unwrap_err().to_string();
    assert!(
        msg.contains("echo-worktype") && msg.contains("echo 0.1.0"),
        "{msg}"
    );

    // Used again (as after a reload): loaded back, and it runs units.
    let wt = host.work_type("echo-worktype", &json!({})).unwrap();
    assert!(is_mapped(&echo));
    let (stdin, stdout, out) = unit_files(dir.path(), b"back again");
    let (tx, mut rx) = initial();
    let _h = wt
        .start(start_request("unit1", dir.path(), stdin, stdout), tx)
        .unwrap();
    assert_eq!(final_progress(&mut rx).await.state, UnitState::Succeeded);
    assert_eq!(std::fs::read(out).unwrap(), b"back again");
    // A plugin in use is never unloaded.
    host.unload_unused([]);
    assert!(is_mapped(&echo));
}

/// The header of ABI 1.`minor` as released (the current one for the current minor).
fn header_of_minor(minor: u32) -> PathBuf {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    if minor == abi::ABI_MINOR {
        sdk.join("include")
    } else {
        sdk.join(format!("fixtures/c/headers/v1_{minor}"))
    }
}

/// Builds `fixtures/c/compat.c` against the header of ABI 1.`minor`.
fn compat_plugin(dir: &Path, minor: u32, extra: &[&str]) -> PathBuf {
    let name = format!("-DPLUGIN_NAME=\"compat{minor}\"");
    let kind = format!("-DSECTION_KIND=\"compat{minor}-worktype\"");
    let mut defines = vec![name.as_str(), kind.as_str()];
    defines.extend_from_slice(extra);
    compile_c_against(
        &c_fixture("compat.c"),
        &header_of_minor(minor),
        dir,
        &format!("_{minor}"),
        &defines,
    )
}

/// Runs one unit of `wt` and returns its final progress and its results.
async fn run_unit(wt: &dyn WorkType, dir: &Path, id: &str) -> (WorkProgress, String) {
    let unit_dir = dir.join(id);
    std::fs::create_dir_all(&unit_dir).unwrap();
    let (stdin, stdout, out) = unit_files(&unit_dir, b"");
    let (tx, mut rx) = initial();
    let _unit = wt
        .start(start_request(id, &unit_dir, stdin, stdout), tx)
        .unwrap();
    let last = final_progress(&mut rx).await;
    (last, std::fs::read_to_string(out).unwrap())
}

/// Plugins built against the headers of ABI 1.0, 1.1 and 1.2 (C fixtures compiled here)
/// load into this host and run units; only the 1.2 one gets the configuration accessors.
#[tokio::test]
async fn plugins_built_for_every_minor_load_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let libs: Vec<PathBuf> = (0..=abi::ABI_MINOR)
        .map(|minor| compat_plugin(dir.path(), minor, &[]))
        .collect();
    let host = load(&libs).unwrap();
    for minor in 0..=abi::ABI_MINOR {
        let info = &host.plugins()[minor as usize];
        assert_eq!(
            (info.name.clone(), info.abi),
            (format!("compat{minor}"), (1, minor))
        );
        let wt = host
            .work_type(
                &format!("compat{minor}-worktype"),
                &json!({"greeting": "hi"}),
            )
            .unwrap();
        let (last, out) = run_unit(&*wt, dir.path(), &format!("u{minor}")).await;
        assert_eq!(last.state, UnitState::Succeeded, "{last:?}");
        let expected = if minor >= 2 {
            format!(
                "built=1.{minor} host=1.{} accessors=yes greeting=hi\n",
                abi::ABI_MINOR
            )
        } else {
            format!(
                "built=1.{minor} host=1.{} accessors=no greeting=-\n",
                abi::ABI_MINOR
            )
        };
        assert_eq!(out, expected);
        // Sections of plugins before 1.2 are not described.
        assert!(host
            .section_desc(&format!("compat{minor}-worktype"))
            .is_some_and(|d| d.fields.is_empty() && !d.own_tls));
    }
    // A 1.2 accessor's type error reaches the host as the plugin's error.
    let err = host
        .work_type("compat2-worktype", &json!({"greeting": ["a"]}))
        .err()
        .expect("a list is not a string");
    assert!(
        err.to_string()
            .contains("greeting: expected a string, got a list"),
        "{err}"
    );
}

/// A 1.2 plugin given the shorter HostApi of a 1.1 host reads only what that host has
/// (no accessors) and works as a 1.1 plugin would.
#[tokio::test]
async fn a_1_2_plugin_works_with_a_1_1_host() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compat_plugin(dir.path(), 2, &[]);
    let loaded = loader::load_plugin_as(&lib, 1).unwrap();
    assert_eq!(loaded.info.abi, (1, 2));
    let (kind, entry) = loaded.claims.into_iter().next().unwrap();
    assert_eq!(kind, "compat2-worktype");
    let ClaimFns::WorkType(fns) = entry.fns else {
        panic!("not a work type");
    };
    let wt =
        worktype::create("compat2", &kind, entry.ctx, fns, &json!({"greeting": "hi"})).unwrap();
    let (last, out) = run_unit(&wt, dir.path(), "old-host").await;
    assert_eq!(last.state, UnitState::Succeeded, "{last:?}");
    assert_eq!(out, "built=1.2 host=1.1 accessors=no greeting=-\n");
    std::mem::forget(loaded.lib);
}

/// A plugin declaring a newer minor than the host loads, with a warning naming both.
#[test]
fn a_newer_minor_loads_with_a_warning_naming_both_versions() {
    let logs = plugin_logs();
    let dir = tempfile::tempdir().unwrap();
    let lib = compat_plugin(dir.path(), 2, &["-DDECLARED_MINOR=9"]);
    let host = load(std::slice::from_ref(&lib)).unwrap();
    assert_eq!(host.plugins()[0].abi, (1, 9));
    let expected = format!(
        "built for plugin ABI 1.9, newer than this receptor's ABI 1.{}",
        abi::ABI_MINOR
    );
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&expected) && l.contains(&*lib.to_string_lossy())),
        "{:?}",
        logs.lock().unwrap()
    );
}

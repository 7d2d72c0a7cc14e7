//! QEMU and qemu-img under supervision, against the real binaries but no guest OS: the
//! "guest" is a 512-byte boot sector that writes two lines on the serial port and halts.
//! Every test prints a note and passes when qemu-system-x86_64 or qemu-img is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use strata::definition::AccelChoice;
use strata::events::{Event, Events, Recorder};
use strata::process::{self, Command};
use strata::qemu::img::{self, ConvertOptions, ImageFormat};
use strata::qemu::{
    Accel, Machine, MachineSpec, Ovmf, PowerOff, QemuError, Qmp, detect, start_with_fallback,
};

const QEMU_INSTALL: &str = "apt-get install qemu-system-x86 qemu-utils";

fn require_qemu() {
    common::require_tool("qemu-system-x86_64", QEMU_INSTALL);
    common::require_tool("qemu-img", QEMU_INSTALL);
}

/// A boot sector: DS=0, then prints MSG on COM1 (0x3f8) byte by byte, then `cli; hlt` forever.
fn boot_sector() -> Vec<u8> {
    let message = b"strata-boot-ok\r\nsecond line\r\n\0";
    let code: [u8; 23] = [
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xFC, // cld
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xBE, 0x17, 0x7C, // mov si, 0x7c17 (the message, right after the code)
        0xAC, // loop: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x03, // jz done
        0xEE, // out dx, al
        0xEB, 0xF8, // jmp loop
        0xFA, // done: cli
        0xF4, // hlt
        0xEB, 0xFC, // jmp done
    ];
    let mut sector = vec![0u8; 512];
    sector[..code.len()].copy_from_slice(&code);
    sector[code.len()..code.len() + message.len()].copy_from_slice(message);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

/// A qcow2 disk holding the boot sector, made through img::convert.
async fn boot_disk(dir: &Path) -> PathBuf {
    let raw = dir.join("boot.raw");
    let mut bytes = boot_sector();
    bytes.resize(1024 * 1024, 0);
    std::fs::write(&raw, bytes).unwrap();
    let disk = dir.join("boot.qcow2");
    img::convert(&raw, &disk, &ConvertOptions::new(ImageFormat::Qcow2), &mut |_| {}).await.unwrap();
    disk
}

fn spec(dir: &Path, disk: &Path) -> MachineSpec {
    let mut spec = MachineSpec::new("strata-test", disk, dir);
    spec.memory_mib = 128;
    spec
}

async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gone(pid: u32) -> bool {
    let pid_t = Pid::from_raw(i32::try_from(pid).unwrap());
    kill(pid_t, None).is_err()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
}

#[test]
fn accel_auto_decides_fast() {
    let started = Instant::now();
    let decision = detect(AccelChoice::Auto);
    let took = started.elapsed();
    eprintln!("accel auto -> {} ({}) in {took:?}", decision.accel, decision.reason);
    assert!(took < Duration::from_secs(1));
    if !Path::new("/dev/kvm").exists() {
        assert_eq!(decision.accel, Accel::Tcg);
    }
    if let Ok(expected) = std::env::var("STRATA_EXPECT_ACCEL") {
        assert_eq!(decision.accel.name(), expected, "{}", decision.reason);
    }
}

#[tokio::test]
async fn qmp_against_a_diskless_qemu() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("qmp.sock");
    let mut qmp_arg = std::ffi::OsString::from("unix:");
    qmp_arg.push(&socket);
    qmp_arg.push(",server=on,wait=off");
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-qmp"])
        .arg(qmp_arg)
        .spawn()
        .unwrap();
    wait_for("the QMP socket", Duration::from_secs(20), || socket.exists()).await;
    let qmp = Qmp::connect(&socket, Duration::from_secs(10)).await.unwrap();
    assert!(qmp.greeting()["version"]["qemu"]["major"].as_u64().unwrap() >= 7);

    let status = qmp.query_status().await.unwrap();
    assert!(status.running);

    let mut events = qmp.subscribe();
    qmp.run(&qapi_qmp::stop {}).await.unwrap();
    let stop = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(stop.name, "STOP");
    assert!(qmp.notices().stopped);
    assert!(!qmp.query_status().await.unwrap().running);
    qmp.run(&qapi_qmp::cont {}).await.unwrap();
    let resume =
        tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(resume.name, "RESUME");
    assert!(!qmp.notices().stopped);

    let error = qmp.execute("no-such-command", None).await.unwrap_err();
    match &error {
        QemuError::QmpCommand { class, .. } => assert_eq!(class, "CommandNotFound"),
        other => panic!("{other:?}"),
    }

    // No guest OS to honour ACPI: system_powerdown changes nothing, quit ends QEMU.
    qmp.run(&qapi_qmp::system_powerdown {}).await.unwrap();
    assert!(child.wait_with_deadline(Duration::from_millis(500)).await.is_err());
    let _ = qmp.run(&qapi_qmp::quit {}).await;
    let status = child.wait_with_deadline(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(qmp.notices().shutdown.unwrap()["reason"], "host-qmp-quit");
    wait_for("QMP to close", Duration::from_secs(5), || qmp.is_closed()).await;
    assert!(matches!(qmp.execute("query-status", None).await, Err(QemuError::QmpClosed { .. })));
}

#[tokio::test]
async fn machine_console_blockdev_snapshot_and_power_off() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = boot_disk(dir.path()).await;
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let started = Instant::now();
    let machine = Machine::start(spec(dir.path(), &disk), &events, "base").await.unwrap();
    eprintln!("QMP ready after {:?}", started.elapsed());
    assert!(machine.is_alive());
    wait_for("the console", Duration::from_secs(30), || {
        machine.console_tail(5).iter().any(|line| line == "second line")
    })
    .await;
    eprintln!("console line after {:?}", started.elapsed());
    assert_eq!(machine.console_tail(2), ["strata-boot-ok", "second line"]);
    assert_eq!(machine.last_console_line().as_deref(), Some("second line"));
    let console: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Console { stage, line } if stage == "base" => Some(line),
            _ => None,
        })
        .collect();
    assert_eq!(console, ["strata-boot-ok", "second line"]);
    assert!(recorder.events().iter().any(|event| matches!(event, Event::QemuStarted { .. })));

    // The node names are there for live snapshots, and a snapshot works.
    let nodes = machine.qmp().execute("query-named-block-nodes", None).await.unwrap();
    let names: Vec<&str> =
        nodes.as_array().unwrap().iter().filter_map(|node| node["node-name"].as_str()).collect();
    assert!(names.contains(&"disk0") && names.contains(&"disk0-file"), "{names:?}");
    let overlay = dir.path().join("overlay.qcow2");
    machine
        .qmp()
        .run(&qapi_qmp::blockdev_snapshot_sync(qapi_qmp::BlockdevSnapshotSync {
            device: None,
            node_name: Some("disk0".into()),
            snapshot_file: overlay.to_string_lossy().into_owned(),
            snapshot_node_name: Some("disk1".into()),
            format: Some("qcow2".into()),
            mode: None,
        }))
        .await
        .unwrap();
    let info = img::info(&overlay).await.unwrap();
    assert_eq!(info.backing_filename.as_deref(), Some(disk.to_str().unwrap()));

    // The guest halted without ACPI: the power-off ends with `quit`.
    let started = Instant::now();
    let ended = machine.power_off(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(ended, PowerOff::Quit(_)), "{ended:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!machine.is_alive());
    assert!(matches!(
        machine.power_off(Duration::from_secs(1)).await,
        Ok(PowerOff::AlreadyExited(_))
    ));
    assert!(dir.path().join("qemu.stderr").exists());
}

#[tokio::test]
async fn snapshot_mode_writes_nothing_and_uefi_argv_is_accepted() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = boot_disk(dir.path()).await;
    let before = std::fs::read(&disk).unwrap();
    let mut snapshot = spec(dir.path(), &disk);
    snapshot.snapshot = true;
    let machine = Machine::start(snapshot, &Events::none(), "run").await.unwrap();
    wait_for("the console", Duration::from_secs(30), || machine.console_bytes() > 0).await;
    machine
        .qmp()
        .execute(
            "human-monitor-command",
            Some(json!({"command-line": "qemu-io disk0 \"write -P 0x5a 0 64k\""})),
        )
        .await
        .unwrap();
    machine.power_off(Duration::from_millis(200)).await.unwrap();
    assert_eq!(std::fs::read(&disk).unwrap(), before, "snapshot mode wrote to the disk");

    let ovmf = Ovmf::find().expect("OVMF is installed (apt-get install ovmf)");
    let uefi_dir = dir.path().join("uefi");
    std::fs::create_dir(&uefi_dir).unwrap();
    let mut uefi = spec(&uefi_dir, &disk);
    uefi.firmware = ovmf.for_boot(&uefi_dir).unwrap();
    let machine = Machine::start(uefi, &Events::none(), "uefi").await.unwrap();
    assert!(machine.qmp().query_status().await.unwrap().running);
    machine.kill().await.unwrap();
}

#[tokio::test]
async fn missing_qemu_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), Path::new("/nonexistent.qcow2"));
    spec.binary = PathBuf::from("/nonexistent/bin/qemu-system-x86_64");
    let error = Machine::start(spec, &Events::none(), "base").await.unwrap_err();
    let chain = error_chain(&error);
    assert!(chain.contains("qemu-system-x86`"), "{chain}");
    assert!(chain.contains("stage `base`"), "{chain}");
}

#[tokio::test]
async fn qemu_exiting_at_start_shows_its_stderr() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), &dir.path().join("missing.qcow2"));
    spec.extra_args = vec!["-no-such-option".into()];
    let started = Instant::now();
    let error = Machine::start(spec, &Events::none(), "base").await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, QemuError::ExitedAtStart { .. }), "{message}");
    assert!(message.contains("-no-such-option"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn qemu_killed_is_noticed_by_died() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = boot_disk(dir.path()).await;
    let machine = Machine::start(spec(dir.path(), &disk), &Events::none(), "base").await.unwrap();
    wait_for("the console", Duration::from_secs(30), || machine.console_tail(5).len() == 2).await;
    let died = machine.died();
    let killed = Instant::now();
    kill(Pid::from_raw(i32::try_from(machine.pid()).unwrap()), Signal::SIGKILL).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), died).await.unwrap().unwrap();
    eprintln!("died() resolved {:?} after SIGKILL", killed.elapsed());
    assert!(!status.success());
    let message = machine.died_error().to_string();
    assert!(message.contains("SIGKILL") && message.contains("second line"), "{message}");
}

const HELPER_ENV: &str = "STRATA_TEST_QEMU_HOLDER";
const HELPER_TEST: &str = "qemu_process::helper_that_holds_a_qemu";

/// Not a test: the process that `qemu_dies_with_strata` starts (this binary again, with
/// HELPER_ENV set), which starts QEMU, prints its pid, and waits to be killed. Ignored, and
/// left out of every run by `.config/nextest.toml`'s default filter.
#[test]
#[ignore = "not a test: the helper process qemu_dies_with_strata starts"]
fn helper_that_holds_a_qemu() {
    let dir = std::env::var_os(HELPER_ENV)
        .expect("started only by qemu_dies_with_strata, which sets STRATA_TEST_QEMU_HOLDER");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none"])
            .current_dir(dir)
            .spawn()
            .unwrap();
        println!("qemu-pid={}", child.pid());
        child.wait_with_deadline(Duration::from_secs(120)).await.unwrap();
    });
}

#[test]
fn qemu_dies_with_strata() {
    require_qemu();
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", HELPER_TEST, "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(helper.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            // libtest prints "test NAME ... " before the helper's own output on that line.
            let (_, pid) = line.split_once("qemu-pid=")?;
            Some(pid.trim().parse().unwrap())
        })
        .expect("the helper printed no pid");
    assert!(!gone(pid));
    let killed = Instant::now();
    helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.wait().unwrap();
    while !gone(pid) {
        assert!(killed.elapsed() < Duration::from_secs(5), "qemu {pid} outlived its parent");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("qemu gone {:?} after its parent was killed", killed.elapsed());
}

#[tokio::test]
async fn kvm_boot_falls_back_to_tcg_or_works() {
    require_qemu();
    let dir = tempfile::tempdir().unwrap();
    let disk = boot_disk(dir.path()).await;
    let mut spec = spec(dir.path(), &disk);
    spec.accel = Accel::Kvm;
    let recorder = Arc::new(Recorder::default());
    let events = Events::none().with(recorder.clone());
    let started = Instant::now();
    let machine =
        start_with_fallback(spec, &events, "base", Duration::from_secs(15)).await.unwrap();
    wait_for("the console", Duration::from_secs(30), || machine.console_bytes() > 0).await;
    let warned = recorder.events().into_iter().find_map(|event| match event {
        Event::Warning { message } => Some(message),
        _ => None,
    });
    eprintln!(
        "running under {} after {:?}; warning: {warned:?}",
        machine.spec().accel,
        started.elapsed()
    );
    assert_eq!(machine.spec().accel == Accel::Tcg, warned.is_some());
    machine.kill().await.unwrap();
}

#[tokio::test]
async fn qemu_img_create_info_check_convert_resize() {
    common::require_tool("qemu-img", QEMU_INSTALL);
    let root = tempfile::tempdir().unwrap();
    let sources = root.path().join("sources");
    let layer = root.path().join("layers").join("k1");
    std::fs::create_dir_all(&sources).unwrap();
    std::fs::create_dir_all(&layer).unwrap();
    let base = sources.join("base.qcow2");
    img::create(&base, ImageFormat::Qcow2, 64 * 1024 * 1024).await.unwrap();

    let overlay = layer.join("disk.qcow2");
    let backing = "../../sources/base.qcow2";
    img::create_overlay(&overlay, backing, "qcow2", None).await.unwrap();
    let info = img::info(&overlay).await.unwrap();
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, 64 * 1024 * 1024);
    assert_eq!(info.backing_filename.as_deref(), Some(backing));
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
    let chain = img::info_chain(&overlay).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].backing_filename, None);

    let bigger = layer.join("bigger.qcow2");
    img::create_overlay(&bigger, backing, "qcow2", Some(128 * 1024 * 1024)).await.unwrap();
    assert_eq!(img::info(&bigger).await.unwrap().virtual_size, 128 * 1024 * 1024);
    img::resize(&bigger, 256 * 1024 * 1024).await.unwrap();
    assert_eq!(img::info(&bigger).await.unwrap().virtual_size, 256 * 1024 * 1024);

    let report = img::check(&overlay, Duration::from_secs(60)).await.unwrap();
    assert_eq!((report.corruptions, report.leaks), (0, 0));

    let mut percents = Vec::new();
    let flat = root.path().join("flat.qcow2");
    let mut options = ConvertOptions::new(ImageFormat::Qcow2);
    options.compression = Some(img::Qcow2Compression::Zstd);
    img::convert(&overlay, &flat, &options, &mut |percent| percents.push(percent)).await.unwrap();
    assert_eq!(percents.last(), Some(&100.0), "{percents:?}");
    let flat_info = img::info(&flat).await.unwrap();
    assert_eq!(flat_info.backing_filename, None);
    assert_eq!(flat_info.virtual_size, 64 * 1024 * 1024);

    let raw = root.path().join("flat.raw");
    img::convert(&overlay, &raw, &ConvertOptions::new(ImageFormat::Raw), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 64 * 1024 * 1024);

    // Not an image qemu-img can check: an error naming the file.
    let error = img::check(&raw, Duration::from_secs(60)).await.unwrap_err();
    assert!(error.to_string().contains("flat.raw"), "{error}");
    // A missing backing file: qemu-img's complaint comes through.
    let error = img::create_overlay(&layer.join("x.qcow2"), "../nope.qcow2", "qcow2", None)
        .await
        .unwrap_err();
    let chain = error_chain(&error);
    assert!(chain.contains("nope.qcow2"), "{chain}");
}

#[tokio::test]
async fn process_output_runs_qemu_img() {
    common::require_tool("qemu-img", QEMU_INSTALL);
    let output =
        process::output(Command::new("qemu-img").arg("--version"), Duration::from_secs(10))
            .await
            .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("qemu-img version"));
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

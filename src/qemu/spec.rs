//! What a QEMU machine is made of, and the argv that says so: a pure function of the spec,
//! snapshot-tested. Must not start anything nor touch the file system.
//!
//! Disks use `-blockdev` with fixed node names (`disk0-file` for the file, `disk0` for the
//! qcow2 format node) so that a later live snapshot (`blockdev-add` of the new overlay, then
//! `blockdev-snapshot`) can name them.
//! Snapshot mode (`strata run`: nothing written) is the exception: there the disk is a
//! `-drive …,snapshot=on`, whose throwaway overlay QEMU creates itself in `$TMPDIR` and unlinks
//! at once, so nothing is left behind even when QEMU is killed; live snapshots are not
//! available in that mode.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The default QEMU binary, looked up on PATH.
pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";

/// The accelerator a machine runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The CPU model that goes with it: `host` under KVM, `max` under TCG.
    #[must_use]
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The firmware a machine boots, with its files: SeaBIOS (QEMU's default) or OVMF in two pflash
/// drives. (The definition's `Firmware` is the choice; this is what QEMU gets.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineFirmware {
    Bios,
    /// `vars` must be a per-boot copy (see `firmware::Ovmf::vars_copy`): the guest writes it.
    Uefi {
        code: PathBuf,
        vars: PathBuf,
    },
}

/// The host cache mode of the main disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Flushes are ignored: fast, and fine while building (a crash throws the layer away).
    Unsafe,
    /// Flushes reach the disk.
    Writeback,
}

/// The main disk: a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// As QEMU should open it; a later live snapshot records the name as given here.
    pub path: PathBuf,
    pub cache: CacheMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// No NIC at all.
    None,
    /// User-mode networking with the guest's port 22 forwarded from 127.0.0.1:`ssh_port`.
    User { ssh_port: u16 },
}

/// Everything QEMU's argv is made from, plus where its stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// The program; default [`DEFAULT_BINARY`].
    pub binary: PathBuf,
    /// `-name`: shows in `ps` and QMP.
    pub name: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub firmware: MachineFirmware,
    pub disk: Disk,
    /// A raw CIDATA image, attached read-only as a second virtio disk.
    pub seed: Option<PathBuf>,
    /// Nothing is written to `disk` (see the module comment).
    pub snapshot: bool,
    pub network: Network,
    /// The serial console is appended to this file.
    pub serial_log: PathBuf,
    /// QMP listens on this unix socket (at most 107 bytes long).
    pub qmp_socket: PathBuf,
    /// The guest agent's virtio-serial port `org.qemu.guest_agent.0` on this unix socket.
    pub guest_agent_socket: Option<PathBuf>,
    /// `-incoming URI`, for a machine that waits for migrated state.
    pub incoming: Option<String>,
    /// Appended to the argv as they are.
    pub extra_args: Vec<String>,
    /// Not part of the argv: QEMU's stderr is appended to this file (e.g. `LOGDIR/qemu.stderr`).
    pub stderr_log: Option<PathBuf>,
}

impl MachineSpec {
    /// A spec with the defaults: TCG, 1 CPU, 1024 MiB, SeaBIOS, no network, cache=unsafe,
    /// sockets and logs in `run_dir` (`qmp.sock`, `console.log`, `qemu.stderr`).
    #[must_use]
    pub fn new(name: &str, disk: impl Into<PathBuf>, run_dir: &Path) -> Self {
        MachineSpec {
            binary: PathBuf::from(DEFAULT_BINARY),
            name: name.to_owned(),
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 1024,
            firmware: MachineFirmware::Bios,
            disk: Disk { path: disk.into(), cache: CacheMode::Unsafe },
            seed: None,
            snapshot: false,
            network: Network::None,
            serial_log: run_dir.join("console.log"),
            qmp_socket: run_dir.join("qmp.sock"),
            guest_agent_socket: None,
            incoming: None,
            extra_args: Vec::new(),
            stderr_log: Some(run_dir.join("qemu.stderr")),
        }
    }

    /// QEMU's arguments (without the program itself).
    #[must_use]
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = Args::default();
        argv.push("-name").push(format!("guest={},debug-threads=on", escape(&self.name)));
        argv.push("-no-user-config").push("-nodefaults").push("-display").push("none");
        let mut machine = "q35".to_owned();
        if let MachineFirmware::Uefi { .. } = self.firmware {
            machine.push_str(",pflash0=ovmf-code,pflash1=ovmf-vars");
        }
        argv.push("-machine").push(machine);
        argv.push("-accel").push(match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        });
        argv.push("-cpu").push(self.accel.cpu_model());
        argv.push("-smp").push(self.cpus.max(1).to_string());
        argv.push("-m").push(self.memory_mib.to_string());

        if let MachineFirmware::Uefi { code, vars } = &self.firmware {
            argv.push("-blockdev").push(file_node("ovmf-code-file", code, true, ""));
            argv.push("-blockdev")
                .push("driver=raw,node-name=ovmf-code,file=ovmf-code-file,read-only=on");
            argv.push("-blockdev").push(file_node("ovmf-vars-file", vars, false, ""));
            argv.push("-blockdev").push("driver=raw,node-name=ovmf-vars,file=ovmf-vars-file");
        }

        let no_flush = match self.disk.cache {
            CacheMode::Unsafe => "on",
            CacheMode::Writeback => "off",
        };
        if self.snapshot {
            let mut drive = OsString::from("if=none,id=disk0,file=");
            drive.push(escape_path(&self.disk.path));
            drive.push(",format=qcow2,snapshot=on,cache=unsafe,discard=unmap,detect-zeroes=unmap");
            argv.push("-drive").push(drive);
        } else {
            let cache = format!(",cache.direct=off,cache.no-flush={no_flush}");
            argv.push("-blockdev").push(file_node(
                "disk0-file",
                &self.disk.path,
                false,
                &format!("{cache},discard=unmap"),
            ));
            argv.push("-blockdev").push(format!(
                "driver=qcow2,node-name=disk0,file=disk0-file{cache},discard=unmap,\
                 detect-zeroes=unmap"
            ));
        }
        argv.push("-device").push("virtio-blk-pci,drive=disk0,id=vda,bootindex=1,write-cache=on");

        if let Some(seed) = &self.seed {
            argv.push("-blockdev").push(file_node("seed-file", seed, true, ""));
            argv.push("-blockdev").push("driver=raw,node-name=seed,file=seed-file,read-only=on");
            argv.push("-device").push("virtio-blk-pci,drive=seed,id=vdb");
        }

        match self.network {
            Network::None => {
                argv.push("-nic").push("none");
            }
            Network::User { ssh_port } => {
                argv.push("-netdev")
                    .push(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"));
                argv.push("-device").push("virtio-net-pci,netdev=net0,id=nic0");
            }
        }
        argv.push("-device").push("virtio-rng-pci,id=rng0");
        // A new generation id at every start, a resume too: Linux (5.18+) then reseeds its
        // random number generator at once, so guests resumed from one saved state do not draw
        // the same "random" bytes (keys made by a stage's steps) until their next reseed.
        argv.push("-device").push("vmgenid,guid=auto,id=vmgenid0");

        argv.push("-chardev")
            .push(os_concat("file,id=serial0,append=on,path=", &escape_path(&self.serial_log)));
        argv.push("-serial").push("chardev:serial0");

        argv.push("-chardev").push(os_concat(
            "socket,id=qmp,server=on,wait=off,path=",
            &escape_path(&self.qmp_socket),
        ));
        argv.push("-mon").push("chardev=qmp,mode=control");

        if let Some(socket) = &self.guest_agent_socket {
            argv.push("-chardev")
                .push(os_concat("socket,id=qga0,server=on,wait=off,path=", &escape_path(socket)));
            argv.push("-device").push("virtio-serial-pci,id=virtio-serial0");
            argv.push("-device").push("virtserialport,chardev=qga0,name=org.qemu.guest_agent.0");
        }

        if let Some(incoming) = &self.incoming {
            argv.push("-incoming").push(incoming.as_str());
        }
        for extra in &self.extra_args {
            argv.push(extra.as_str());
        }
        argv.0
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.0.push(arg.into());
        self
    }
}

fn file_node(node: &str, path: &Path, read_only: bool, extra: &str) -> OsString {
    let mut option = OsString::from(format!("driver=file,node-name={node},filename="));
    option.push(escape_path(path));
    if read_only {
        option.push(",read-only=on");
    }
    option.push(extra);
    option
}

fn os_concat(prefix: &str, rest: &OsString) -> OsString {
    let mut joined = OsString::from(prefix);
    joined.push(rest);
    joined
}

/// QEMU's option syntax ends a value at a comma; a literal comma is written twice.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn escape_path(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = Vec::with_capacity(path.as_os_str().len());
    for &byte in path.as_os_str().as_bytes() {
        bytes.push(byte);
        if byte == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn argv(spec: &MachineSpec) -> Vec<String> {
        spec.argv().into_iter().map(|arg| arg.into_string().unwrap()).collect()
    }

    fn base() -> MachineSpec {
        MachineSpec::new("web-base", "/s/tmp/b1/disk.qcow2", Path::new("/s/run"))
    }

    #[test]
    fn bios_tcg_with_network_and_seed() {
        let mut spec = base();
        spec.cpus = 2;
        spec.memory_mib = 2048;
        spec.seed = Some("/s/run/seed.img".into());
        spec.network = Network::User { ssh_port: 40222 };
        let expected = [
            "-name",
            "guest=web-base,debug-threads=on",
            "-no-user-config",
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
            "-blockdev",
            "driver=file,node-name=disk0-file,filename=/s/tmp/b1/disk.qcow2,cache.direct=off,cache.no-flush=on,discard=unmap",
            "-blockdev",
            "driver=qcow2,node-name=disk0,file=disk0-file,cache.direct=off,cache.no-flush=on,discard=unmap,detect-zeroes=unmap",
            "-device",
            "virtio-blk-pci,drive=disk0,id=vda,bootindex=1,write-cache=on",
            "-blockdev",
            "driver=file,node-name=seed-file,filename=/s/run/seed.img,read-only=on",
            "-blockdev",
            "driver=raw,node-name=seed,file=seed-file,read-only=on",
            "-device",
            "virtio-blk-pci,drive=seed,id=vdb",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:40222-:22",
            "-device",
            "virtio-net-pci,netdev=net0,id=nic0",
            "-device",
            "virtio-rng-pci,id=rng0",
            "-device",
            "vmgenid,guid=auto,id=vmgenid0",
            "-chardev",
            "file,id=serial0,append=on,path=/s/run/console.log",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "socket,id=qmp,server=on,wait=off,path=/s/run/qmp.sock",
            "-mon",
            "chardev=qmp,mode=control",
        ];
        assert_eq!(argv(&spec), expected);
    }

    #[test]
    fn uefi_kvm_writeback_no_network() {
        let mut spec = base();
        spec.accel = Accel::Kvm;
        spec.disk.cache = CacheMode::Writeback;
        spec.firmware = MachineFirmware::Uefi {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: "/s/run/OVMF_VARS.fd".into(),
        };
        let expected = [
            "-name",
            "guest=web-base,debug-threads=on",
            "-no-user-config",
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "q35,pflash0=ovmf-code,pflash1=ovmf-vars",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-smp",
            "1",
            "-m",
            "1024",
            "-blockdev",
            "driver=file,node-name=ovmf-code-file,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,read-only=on",
            "-blockdev",
            "driver=raw,node-name=ovmf-code,file=ovmf-code-file,read-only=on",
            "-blockdev",
            "driver=file,node-name=ovmf-vars-file,filename=/s/run/OVMF_VARS.fd",
            "-blockdev",
            "driver=raw,node-name=ovmf-vars,file=ovmf-vars-file",
            "-blockdev",
            "driver=file,node-name=disk0-file,filename=/s/tmp/b1/disk.qcow2,cache.direct=off,cache.no-flush=off,discard=unmap",
            "-blockdev",
            "driver=qcow2,node-name=disk0,file=disk0-file,cache.direct=off,cache.no-flush=off,discard=unmap,detect-zeroes=unmap",
            "-device",
            "virtio-blk-pci,drive=disk0,id=vda,bootindex=1,write-cache=on",
            "-nic",
            "none",
            "-device",
            "virtio-rng-pci,id=rng0",
            "-device",
            "vmgenid,guid=auto,id=vmgenid0",
            "-chardev",
            "file,id=serial0,append=on,path=/s/run/console.log",
            "-serial",
            "chardev:serial0",
            "-chardev",
            "socket,id=qmp,server=on,wait=off,path=/s/run/qmp.sock",
            "-mon",
            "chardev=qmp,mode=control",
        ];
        assert_eq!(argv(&spec), expected);
    }

    #[test]
    fn guest_agent_incoming_and_extra_args_come_last() {
        let mut spec = base();
        spec.guest_agent_socket = Some("/s/run/qga.sock".into());
        spec.incoming = Some("defer".into());
        spec.extra_args = vec!["-device".into(), "virtio-balloon-pci".into()];
        let args = argv(&spec);
        let tail: Vec<&str> = args[args.len() - 10..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-chardev",
                "socket,id=qga0,server=on,wait=off,path=/s/run/qga.sock",
                "-device",
                "virtio-serial-pci,id=virtio-serial0",
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-incoming",
                "defer",
                "-device",
                "virtio-balloon-pci",
            ]
        );
    }

    #[test]
    fn snapshot_mode_uses_a_throwaway_overlay() {
        let mut spec = base();
        spec.snapshot = true;
        let args = argv(&spec);
        let drive = args.iter().position(|arg| arg == "-drive").unwrap();
        assert_eq!(
            args[drive + 1],
            "if=none,id=disk0,file=/s/tmp/b1/disk.qcow2,format=qcow2,snapshot=on,cache=unsafe,discard=unmap,detect-zeroes=unmap"
        );
        assert_eq!(args[drive + 3], "virtio-blk-pci,drive=disk0,id=vda,bootindex=1,write-cache=on");
        assert!(!args.iter().any(|arg| arg.contains("disk0-file")));
    }

    #[test]
    fn commas_in_paths_and_names_are_doubled() {
        let mut spec = MachineSpec::new("a,b", "/x,y/disk.qcow2", Path::new("/r,un"));
        spec.snapshot = false;
        let args = argv(&spec);
        assert!(args.contains(&"guest=a,,b,debug-threads=on".to_owned()));
        assert!(args.iter().any(|arg| arg.contains("filename=/x,,y/disk.qcow2,")));
        assert!(args.contains(&"file,id=serial0,append=on,path=/r,,un/console.log".to_owned()));
    }
}

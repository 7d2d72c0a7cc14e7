//! A first boot of an image as a cloud or Proxmox starts it, for guest tests (guest_export,
//! guest_drift): a throwaway qcow2 overlay on the image, a seed drive strata did not write
//! (config drive or NoCloud `cidata`), a new key, SSH and the guest agent forwarded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{SSH_RETRY_WINDOW, assert_success, free_port, ssh_retrying, stderr};

/// How long a guest may take to answer over SSH with cloud-init done: generous, since other
/// guests share the machine's two cores.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(600);

/// A fresh ed25519 key made with the host's ssh-keygen: (private key path, public key line).
pub fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_success(&output, "ssh-keygen");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_owned();
    (path, public)
}

/// A vfat image with `label` (11 bytes, as FAT stores it) holding `files` (paths with `/`).
pub fn vfat_image(path: &Path, label: &[u8; 11], files: &[(&str, String)]) {
    let mut file =
        std::fs::File::options().read(true).write(true).create_new(true).open(path).unwrap();
    file.set_len(4 << 20).unwrap();
    fatfs::format_volume(&mut file, fatfs::FormatVolumeOptions::new().volume_label(*label))
        .unwrap();
    let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
    {
        let root = fs.root_dir();
        for (name, content) in files {
            let (folders, file_name) = name.rsplit_once('/').unwrap_or(("", name));
            let mut dir = root.clone();
            for folder in folders.split('/').filter(|folder| !folder.is_empty()) {
                dir = dir.create_dir(folder).unwrap();
            }
            let mut entry = dir.create_file(file_name).unwrap();
            entry.truncate().unwrap();
            entry.write_all(content.as_bytes()).unwrap();
            entry.flush().unwrap();
        }
    }
    fs.unmount().unwrap();
}

/// A NoCloud drive (vfat, label `cidata`) as Proxmox writes its cloudinit drive: a new
/// instance-id, a hostname and `public_key` for the image's default user, DHCP on `mac`.
pub fn nocloud_drive(path: &Path, hostname: &str, public_key: &str, mac: &str, instance_id: &str) {
    let user_data = format!(
        "#cloud-config\nhostname: {hostname}\nmanage_etc_hosts: true\nfqdn: {hostname}\n\
         ssh_authorized_keys:\n  - {public_key}\nchpasswd:\n  expire: False\nusers:\n  - default\n\
         package_upgrade: false\n"
    );
    let meta_data = format!("instance-id: {instance_id}\n");
    let network_config = format!(
        "version: 1\nconfig:\n    - type: physical\n      name: eth0\n      mac_address: '{mac}'\n      \
         subnets:\n      - type: dhcp4\n"
    );
    vfat_image(
        path,
        b"cidata     ",
        &[("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)],
    );
}

/// How a platform attaches the root disk and the cloud-init drive.
pub enum Platform {
    /// Nova: virtio-blk root disk, a vfat config drive on virtio-blk.
    OpenStack,
    /// Proxmox VE: virtio-scsi root disk (`scsihw virtio-scsi-pci`, `scsi0`), the cloudinit
    /// drive on IDE (`ide2`).
    Proxmox,
}

/// A first boot of an exported image: on a throwaway overlay, so the artifact is untouched.
pub struct Instance {
    pub child: Child,
    pub port: u16,
    pub key: PathBuf,
    pub work: PathBuf,
    pub started: Instant,
}

impl Instance {
    pub fn boot(
        platform: &Platform,
        artifact: &Path,
        drive: &Path,
        mac: &str,
        work: &Path,
    ) -> Instance {
        let overlay = work.join("instance.qcow2");
        let output = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(artifact)
            .arg(&overlay)
            .output()
            .unwrap();
        assert_success(&output, "qemu-img create (instance overlay)");
        let port = free_port();
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-machine", "pc"])
            .args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "1024"])
            .arg("-serial")
            .arg(format!("file:{}", work.join("console.log").display()))
            .args(["-device", "virtio-rng-pci"])
            .arg("-netdev")
            .arg(format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=net0,mac={mac}"))
            .arg("-chardev")
            .arg(format!(
                "socket,id=qga0,path={},server=on,wait=off",
                work.join("qga.sock").display()
            ))
            .args([
                "-device",
                "virtio-serial-pci",
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        let root = format!("file={},if=none,id=root,format=qcow2,discard=unmap", overlay.display());
        let seed = format!("file={},if=none,id=seed,format=raw", drive.display());
        match platform {
            Platform::OpenStack => command
                .args(["-drive", &root, "-device", "virtio-blk-pci,drive=root,bootindex=0"])
                .args([
                    "-drive",
                    &format!("{seed},readonly=on"),
                    "-device",
                    "virtio-blk-pci,drive=seed",
                ]),
            Platform::Proxmox => command
                .args(["-device", "virtio-scsi-pci,id=scsihw0"])
                .args(["-drive", &root, "-device", "scsi-hd,bus=scsihw0.0,drive=root,bootindex=0"])
                .args(["-drive", &seed, "-device", "ide-hd,bus=ide.1,unit=0,drive=seed"]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("qemu.stderr")).unwrap())
            .spawn()
            .unwrap();
        Instance {
            child,
            port,
            key: work.join("instance_key"),
            work: work.to_owned(),
            started: Instant::now(),
        }
    }

    pub fn ssh_as(&self, user: &str, key: &Path, command: &str) -> Output {
        self.ssh_command(user, key, command).output().unwrap()
    }

    /// Like [`Instance::ssh_as`], tried again while SSH itself fails (cloud-init restarts sshd
    /// just after the first login).
    pub fn ssh_as_retrying(&self, user: &str, key: &Path, command: &str) -> Output {
        ssh_retrying(|| self.ssh_command(user, key, command), SSH_RETRY_WINDOW)
    }

    pub fn ssh_command(&self, user: &str, key: &Path, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-i")
            .arg(key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=20",
            ])
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .stdin(Stdio::null());
        ssh
    }

    pub fn ssh(&self, user: &str, command: &str) -> String {
        let output = self.ssh_as_retrying(user, &self.key, command);
        assert!(
            output.status.success(),
            "`{command}` failed in the guest: {}\n{}",
            stderr(&output),
            self.console_tail()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.work.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("console's last lines:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    /// Polls SSH (as `user`, with the instance's key) until it answers, then waits for cloud-init.
    pub fn wait_ready(&mut self, user: &str) -> f64 {
        let deadline = self.started + BOOT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let qemu =
                    std::fs::read_to_string(self.work.join("qemu.stderr")).unwrap_or_default();
                panic!(
                    "qemu exited with {status} before SSH answered: {qemu}\n{}",
                    self.console_tail()
                );
            }
            if self.ssh_as(user, &self.key, "true").status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no SSH after {BOOT_DEADLINE:?}\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
        let ssh_seconds = self.started.elapsed().as_secs_f64();
        let status = self.ssh_as_retrying(user, &self.key, "cloud-init status --wait --long");
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(
            status.status.success() && text.contains("done"),
            "cloud-init: {text}{}\n{}",
            stderr(&status),
            self.console_tail()
        );
        ssh_seconds
    }

    /// `guest-ping` over the agent's virtio-serial channel, as the platform's host would.
    pub fn agent_answers(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(self.work.join("qga.sock")) else { return false };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if stream.write_all(b"{\"execute\":\"guest-ping\"}\n").is_err() {
            return false;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).is_ok() && line.contains("\"return\"")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

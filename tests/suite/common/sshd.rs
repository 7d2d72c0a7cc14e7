//! A real OpenSSH server on 127.0.0.1 for tests without a guest: its own `sshd -D` with a host
//! key and an authorized key made by strata, in a temp folder (communicator_ssh, cli_drift).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata::communicator::{ClientKey, HostKey};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, killed when dropped.
pub struct Sshd {
    pub child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with the server's files: host key, authorized_keys, sshd_config.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub host: HostKey,
    pub client: ClientKey,
    pub addr: SocketAddr,
}

/// sshd is installed, or the test fails saying how to install it.
pub fn require_sshd() {
    assert!(Path::new(SSHD).exists(), "{SSHD} is not installed: apt-get install openssh-server");
}

/// Starts `sshd -D` with `config` on `port`, logging to stderr.
pub fn spawn_sshd(config: &Path, port: u16) -> Sshd {
    let child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config)
        .arg("-p")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Sshd { child }
}

impl Server {
    pub fn new() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let host = HostKey::generate().unwrap();
        let client = ClientKey::generate().unwrap();
        let key_path = dir.path().join("host_ed25519");
        fs::write(&key_path, host.private_openssh().unwrap()).unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, client.public_openssh().unwrap() + "\n").unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
             UsePAM no\nStrictModes no\nPidFile none\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nLogLevel ERROR\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
            key_path.display(),
            authorized.display()
        );
        fs::write(dir.path().join("sshd_config"), config).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        Server { dir, host, client, addr }
    }

    /// Starts sshd and waits until it listens.
    pub fn start(&self) -> Sshd {
        let sshd = spawn_sshd(&self.path("sshd_config"), self.addr.port());
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

//! systemd's notification protocol (`sd_notify`): READY=1, WATCHDOG=1, STOPPING=1 over the
//! datagram socket named by `NOTIFY_SOCKET`. A no-op when not run by systemd.

use std::time::Duration;

fn socket_addr(path: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "linux")]
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes());
    }
    std::os::unix::net::SocketAddr::from_pathname(path)
}

/// Send `state` (e.g. `"READY=1"`); ignored when `NOTIFY_SOCKET` is unset.
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else { return };
    let sent = socket_addr(&path).and_then(|addr| {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = %path, "sd_notify failed");
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("tidemark-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let addr = socket_addr(path.to_str().unwrap()).unwrap();
        std::os::unix::net::UnixDatagram::unbound().unwrap().send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 16];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(dir).ok();
    }
}

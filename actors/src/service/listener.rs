//! Who holds a TCP listener: the listening sockets of an address in `/proc/net/tcp` and
//! `/proc/net/tcp6` (by inode) against the fds of a child's processes. A TCP ready check
//! uses it so that another process listening on the child's port (a squatter) never makes
//! the child `running`. Reads /proc only: call it off the supervision thread.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::peer::ChildProcesses;

/// `Ok` if every socket listening for connections to `target` is held by one of the
/// child's processes (and there is at least one); else why not.
pub(crate) fn held_by_child(target: SocketAddr, child: &ChildProcesses) -> Result<(), String> {
    let listeners = listening_inodes(target)?;
    if listeners.is_empty() {
        return Err(format!("no socket listens on {target} in /proc/net/tcp*"));
    }
    // The leader first: it is usually the one listening.
    let mut held = socket_inodes(child.pgid());
    if !listeners.is_subset(&held) {
        for pid in child.members() {
            held.extend(socket_inodes(pid));
        }
    }
    if listeners.is_subset(&held) {
        Ok(())
    } else {
        Err(format!(
            "{target} accepts connections, but another process than the child listens on it"
        ))
    }
}

/// The inodes of the sockets listening for connections to `target`: bound to its address
/// or to the wildcard (an IPv6 wildcard also takes IPv4 connections).
fn listening_inodes(target: SocketAddr) -> Result<HashSet<u64>, String> {
    let mut inodes = HashSet::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel.
            Err(_) if v6 => continue,
            Err(e) => return Err(format!("cannot read {table}: {e}")),
        };
        for line in text.lines().skip(1) {
            if let Some((addr, inode)) = parse_listener(line, v6) {
                if addr.port() == target.port() && accepts_for(addr.ip(), target.ip()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    Ok(inodes)
}

/// Whether a socket bound to `bound` takes connections to `to`.
fn accepts_for(bound: IpAddr, to: IpAddr) -> bool {
    if bound == to || bound.is_unspecified() {
        return true;
    }
    match (bound, to) {
        (IpAddr::V6(b), IpAddr::V4(t)) => b.to_ipv4_mapped() == Some(t),
        (IpAddr::V4(b), IpAddr::V6(t)) => t.to_ipv4_mapped() == Some(b),
        _ => false,
    }
}

/// A LISTEN line of /proc/net/tcp(6): its local address and socket inode.
fn parse_listener(line: &str, v6: bool) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        // Four 32-bit words, each printed in host byte order.
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        let word = u32::from_str_radix(ip, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((SocketAddr::new(ip, port), inode))
}

/// The inodes of the sockets `pid` holds open (`socket:[N]` links in /proc/PID/fd).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.ok()?.path()).ok()?;
        let target = target.to_str()?;
        target
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_the_childs_only_if_the_childs_processes_hold_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = listener.local_addr().expect("addr");
        let me = std::process::id();
        let my_group = crate::proc::process_group(me).expect("group");
        assert_eq!(
            held_by_child(target, &ChildProcesses::led_by(my_group)),
            Ok(())
        );
        let stranger = held_by_child(target, &ChildProcesses::led_by(my_group + 1));
        assert!(stranger.is_err_and(|e| e.contains("another process")));
        drop(listener);
        assert!(held_by_child(target, &ChildProcesses::led_by(my_group)).is_err());
    }

    #[test]
    fn proc_net_tcp_lines_parse() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let (addr, inode) = parse_listener(v4, false).expect("v4");
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(inode, 12345);
        let v6 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        let (addr, _) = parse_listener(v6, true).expect("v6");
        assert!(addr.ip().is_unspecified());
        assert!(accepts_for(addr.ip(), "127.0.0.1".parse().unwrap()));
        assert!(!accepts_for(
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }
}

//! Real nginx backends: one per backend namespace, answering
//! `backend-<i>\n` on `/` and an ~8 KB body on `/big`.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{BIG_BODY_LEN, NGINX};
use crate::netns::{ManagedChild, NetNs};

/// Starts nginx on `port` in every namespace of `backends` (backend `i` is
/// `backends[i-1]`, its files in `dir/b<i>`) and waits until each accepts
/// TCP on both of `addrs(i)`. On error the ones already started are stopped
/// (dropped).
pub(super) fn start_all(
    dir: &Path,
    backends: &[NetNs],
    port: u16,
    addrs: impl Fn(usize) -> [IpAddr; 2],
) -> anyhow::Result<Vec<ManagedChild>> {
    let mut children = Vec::with_capacity(backends.len());
    for (idx, ns) in backends.iter().enumerate() {
        let i = idx + 1;
        children.push(spawn(dir, ns, i, port, &format!("backend-{i}\n"))?);
    }
    for (idx, ns) in backends.iter().enumerate() {
        let i = idx + 1;
        let targets = addrs(i).map(|ip| SocketAddr::new(ip, port));
        wait_listening(
            ns,
            &children[idx],
            &dir.join(format!("b{i}")),
            i,
            &targets,
            Duration::from_secs(5),
        )?;
    }
    Ok(children)
}

/// Starts backend `i`'s nginx in `ns` (files in `dir/b<i>`) answering
/// `body` on `/`; does not wait for it to listen.
pub(super) fn spawn(
    dir: &Path,
    ns: &NetNs,
    i: usize,
    port: u16,
    body: &str,
) -> anyhow::Result<ManagedChild> {
    let dir = dir.join(format!("b{i}"));
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("www").join("big"), big_body(i))?;
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf(&dir, i, port, body))?;
    let stderr = std::fs::File::create(dir.join("stderr.log"))?;
    let mut cmd = ns.exec([NGINX]);
    cmd.arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(stderr);
    ManagedChild::spawn(&format!("nginx backend-{i}"), &mut cmd)
}

pub(super) fn wait_listening(
    ns: &NetNs,
    child: &ManagedChild,
    dir: &Path,
    i: usize,
    targets: &[SocketAddr; 2],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let up = ns.in_ns(|| {
            targets
                .iter()
                .all(|t| TcpStream::connect_timeout(t, Duration::from_millis(200)).is_ok())
        });
        if up {
            return Ok(());
        }
        let logs = || {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("{}{}", read("stderr.log"), read("error.log"))
        };
        if let Some(status) = child.try_wait()? {
            bail!("nginx backend-{i} exited ({status}): {}", logs().trim());
        }
        if Instant::now() >= deadline {
            bail!(
                "nginx backend-{i} not listening on {} and {} after {timeout:?}: {}",
                targets[0],
                targets[1],
                logs().trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn conf(dir: &Path, i: usize, port: u16, body: &str) -> String {
    let d = dir.display();
    // As an nginx string: backslashes, quotes and newlines escaped.
    let body = body
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!(
        r#"# nginx for xlb test backend-{i} (generated)
master_process off;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/plain;
    # Long-lived keep-alive connections for the stickiness tests.
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {{
        listen 0.0.0.0:{port};
        listen [::]:{port} ipv6only=on;
        location / {{
            return 200 "{body}";
        }}
        location = /big {{
            root {d}/www;
        }}
    }}
}}
"#
    )
}

/// `/big` of backend `i`: first line `backend-<i>`, BIG_BODY_LEN bytes total.
pub(super) fn big_body(i: usize) -> Vec<u8> {
    let mut body = format!("backend-{i}\n").into_bytes();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    while body.len() < BIG_BODY_LEN {
        let n = line.len().min(BIG_BODY_LEN - body.len());
        body.extend_from_slice(&line[..n]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_body_names_its_backend_and_has_the_promised_size() {
        let body = big_body(2);
        assert_eq!(body.len(), BIG_BODY_LEN);
        assert!(body.starts_with(b"backend-2\n"));
    }

    #[test]
    fn conf_listens_on_the_given_port_for_both_families() {
        let c = conf(Path::new("/tmp/x"), 3, 8080, "backend-3\n");
        assert!(c.contains("listen 0.0.0.0:8080;"), "{c}");
        assert!(c.contains("listen [::]:8080 ipv6only=on;"), "{c}");
        assert!(c.contains("return 200 \"backend-3\\n\";"), "{c}");
    }
}

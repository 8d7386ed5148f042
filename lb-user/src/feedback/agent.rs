//! The agent client: asks each backend of a VIP with `source = "agent"`
//! for its weight on its own schedule, one tokio task per (VIP, backend),
//! on the health checks' task set and tick grid ([`crate::health::tasks`]:
//! random start within the interval, then a fixed grid, missed ticks
//! skipped). Answers go to the daemon over a channel; the daemon hands
//! them to the controller.
//!
//! One question is a TCP connection to the agent's port, bounded by the
//! timeout as a whole. Without `path` the agent speaks first, as HAProxy's
//! agent-check: xlb sends nothing and reads up to a newline, the close, or
//! [`MAX_REPLY`] + 1 bytes. With `path` it is an HTTP GET (the health
//! checks' HTTP/1.0 client, so no chunked body), and the body of a 2xx
//! answer is the reply.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use lb_common::VipKey;
use tokio::{io::AsyncReadExt as _, net::TcpStream, sync::mpsc, time::Instant};

use super::reply::{self, MAX_REPLY, Reply, ReplyError};
use crate::{
    config::{AgentConfig, Config, FeedbackSource},
    health::{
        http,
        tasks::{self, BackendTasks, Target},
    },
};

/// Room for this many answers not yet taken by the daemon.
const CHANNEL: usize = 4096;

/// What one question got.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The agent answered: what it said and what that means.
    Reply {
        text: String,
        parsed: Result<Reply, ReplyError>,
    },
    /// No reply: refused, timed out, an HTTP error status, a broken
    /// answer.
    NoAnswer(String),
}

/// One answer, addressed to a backend of a VIP.
#[derive(Debug, Clone)]
pub struct AgentResult {
    pub vip: VipKey,
    pub addr: IpAddr,
    /// Which task asked: answers of a task a reload replaced are dropped.
    pub task: u64,
    pub answer: Answer,
}

/// The running agent questions.
pub struct Agents {
    tasks: BackendTasks<AgentConfig>,
    tx: mpsc::Sender<AgentResult>,
}

impl Agents {
    /// No questions yet, and the receiving end of the answers.
    pub fn new() -> (Agents, mpsc::Receiver<AgentResult>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let a = Agents {
            tasks: BackendTasks::new(),
            tx,
        };
        (a, rx)
    }

    /// Makes the running questions those of `config`'s backends (the
    /// daemon asks the controller instead, which also has the backends
    /// added at runtime: [`Agents::reconcile_targets`]).
    pub fn reconcile(&mut self, config: &Config) {
        let mut targets = Vec::new();
        for vip in &config.vips {
            let Some(FeedbackSource::Agent(agent)) = vip.feedback.as_ref().map(|f| &f.source)
            else {
                continue;
            };
            for b in &vip.backends {
                targets.push((vip.key(), b.address, agent.clone()));
            }
        }
        self.reconcile_targets(&targets);
    }

    /// Makes the running questions those of `targets` (VIP, backend
    /// address, agent): unchanged ones go on, changed ones restart, gone
    /// ones stop.
    pub fn reconcile_targets(&mut self, targets: &[(VipKey, IpAddr, AgentConfig)]) {
        let wanted: HashMap<Target, &AgentConfig> =
            targets.iter().map(|(v, a, c)| ((*v, *a), c)).collect();
        let tx = &self.tx;
        self.tasks.reconcile(wanted, |agent, (vip, addr), id| {
            tokio::spawn(run_task(agent.clone(), vip, addr, id, tx.clone()))
        });
    }

    /// Whether `result` comes from the task currently asking its backend.
    pub fn is_current(&self, result: &AgentResult) -> bool {
        self.tasks
            .is_current((result.vip, result.addr), result.task)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

async fn run_task(
    agent: AgentConfig,
    vip: VipKey,
    addr: IpAddr,
    task: u64,
    tx: mpsc::Sender<AgentResult>,
) {
    let mut ticks = tasks::grid(agent.interval);
    loop {
        ticks.tick().await;
        let answer = ask(&agent, addr).await;
        let result = AgentResult {
            vip,
            addr,
            task,
            answer,
        };
        if tx.send(result).await.is_err() {
            return; // the daemon is shutting down
        }
    }
}

/// Asks the agent of `addr` once; never takes (much) longer than the
/// timeout.
pub async fn ask(agent: &AgentConfig, addr: IpAddr) -> Answer {
    let target = SocketAddr::new(addr, agent.port);
    let deadline = Instant::now() + agent.timeout;
    let exchange = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect to {target}: {e}"))?;
        match &agent.path {
            None => read_line(&mut stream)
                .await
                .map_err(|e| format!("read from {target}: {e}")),
            Some(path) => {
                let raw = http::exchange(&mut stream, &http::host_header(target), path)
                    .await
                    .map_err(|e| format!("GET {path}: {e}"))?;
                let response = http::parse(&raw).map_err(|e| format!("GET {path}: {e}"))?;
                if !(200..=299).contains(&response.status) {
                    return Err(format!("GET {path}: HTTP {}", response.status));
                }
                Ok(response.body)
            }
        }
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(bytes)) => Answer::Reply {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            parsed: reply::parse(&bytes),
        },
        Ok(Err(why)) => Answer::NoAnswer(why),
        Err(_) => Answer::NoAnswer(format!(
            "{target}: no reply within {} ms",
            agent.timeout.as_millis()
        )),
    }
}

/// Reads up to and including the first newline, or to the close; stops
/// after `MAX_REPLY + 1` bytes (which the parser then refuses as too long).
async fn read_line(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; MAX_REPLY + 1];
    loop {
        let room = MAX_REPLY + 1 - buf.len();
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(buf);
        }
        let got = &chunk[..n];
        if let Some(i) = got.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&got[..=i]);
            return Ok(buf);
        }
        buf.extend_from_slice(got);
        if buf.len() > MAX_REPLY {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{io::AsyncWriteExt as _, task::JoinHandle};

    use super::*;

    fn agent(port: u16, path: Option<&str>) -> AgentConfig {
        AgentConfig {
            port,
            path: path.map(str::to_owned),
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(300),
        }
    }

    /// A loopback agent that answers every connection with `reply` and,
    /// if `hold`, keeps the connection open afterwards.
    async fn serve(reply: &'static [u8], hold: bool) -> (u16, JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(reply).await;
                if hold {
                    held.push(s);
                }
            }
        });
        (port, task)
    }

    fn percent(a: &Answer) -> Option<u8> {
        match a {
            Answer::Reply { parsed: Ok(r), .. } => Some(r.percent),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_tcp_agent_is_read_to_its_newline_or_close() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // The newline ends the read although the agent keeps the line open.
        let (port, t) = serve(b"25%\r\nlater text\n", true).await;
        assert_eq!(percent(&ask(&agent(port, None), lo).await), Some(25));
        t.abort();
        // The close ends it without a newline.
        let (port, t) = serve(b"40", false).await;
        assert_eq!(percent(&ask(&agent(port, None), lo).await), Some(60));
        t.abort();
        // Endless bytes without a newline: a bad reply, not a hang.
        let (port, t) = serve(&[b'7'; 4000], true).await;
        let a = ask(&agent(port, None), lo).await;
        assert!(
            matches!(
                &a,
                Answer::Reply {
                    parsed: Err(ReplyError::TooLong),
                    ..
                }
            ),
            "{a:?}"
        );
        t.abort();
    }

    #[tokio::test]
    async fn silence_and_refusal_are_no_answer() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (port, t) = serve(b"", true).await;
        let started = Instant::now();
        let a = ask(&agent(port, None), lo).await;
        assert!(
            matches!(&a, Answer::NoAnswer(w) if w.contains("no reply within 300 ms")),
            "{a:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(600));
        t.abort();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = ask(&agent(closed, None), lo).await;
        assert!(
            matches!(&a, Answer::NoAnswer(w) if w.contains("refused")),
            "{a:?}"
        );
    }

    #[tokio::test]
    async fn an_http_agent_answers_in_the_body_of_a_2xx() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (port, t) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n30%\n", true).await;
        assert_eq!(
            percent(&ask(&agent(port, Some("/load")), lo).await),
            Some(30)
        );
        t.abort();
        let (port, t) = serve(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\n30%\n", true).await;
        let a = ask(&agent(port, Some("/load")), lo).await;
        assert_eq!(a, Answer::NoAnswer("GET /load: HTTP 503".into()));
        t.abort();
    }
}

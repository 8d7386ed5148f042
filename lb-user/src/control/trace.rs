//! Packet traces (`xlb trace`): the controller writes the filter and sets
//! `LB_F_TRACE` (it is the only writer of `LB_CONFIG`), and clears the
//! flag when the trace is stopped or reaches its deadline. One trace at a
//! time: the records go to one ring buffer, which has one reader.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lb_common::TraceFilter;

use super::Controller;
use crate::{
    api::{MAX_TRACE_SECONDS, TraceBackend, TraceSpec, TraceStarted, TraceVip},
    maps::MapStore,
    trace::filter::{self, NamedVip},
};

/// The trace that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tracing {
    id: u64,
    until: Instant,
}

impl<M: MapStore> Controller<M> {
    /// Starts the trace `spec` at `now` (`now_ns` on the data plane's
    /// clock, CLOCK_MONOTONIC): the filter first, then the flag. Refused
    /// while another trace runs. The answer holds what the records name
    /// by number; the caller adds where the ring is pinned.
    pub fn start_trace(
        &mut self,
        spec: &TraceSpec,
        now: Instant,
        now_ns: u64,
    ) -> Result<TraceStarted> {
        self.expire_trace(now)?;
        if let Some(t) = self.trace {
            bail!(
                "trace {} runs for {} s more: the trace ring has one reader (it ends by \
                 itself; `xlb trace` stops it when it ends)",
                t.id,
                t.until.saturating_duration_since(now).as_secs().max(1)
            );
        }
        if spec.seconds == 0 || spec.seconds > MAX_TRACE_SECONDS {
            bail!(
                "a trace lasts 1 to {MAX_TRACE_SECONDS} seconds, not {}",
                spec.seconds
            );
        }
        let vips: Vec<NamedVip> = self
            .vips
            .values()
            .map(|v| NamedVip {
                name: v.name().to_owned(),
                key: v.key,
            })
            .collect();
        let length = Duration::from_secs(u64::from(spec.seconds));
        let until_ns = now_ns + length.as_nanos() as u64;
        let (f, words) = filter::build(spec, &vips, until_ns)?;
        self.maps.set_trace_filter(&f)?;
        self.trace_ids += 1;
        let id = self.trace_ids;
        self.trace = Some(Tracing {
            id,
            until: now + length,
        });
        if let Err(e) = self.write_lb_config() {
            self.trace = None;
            return Err(e);
        }
        tracing::info!(trace = id, filter = %words, seconds = spec.seconds, "trace started");
        Ok(TraceStarted {
            id,
            since_ns: now_ns,
            until_ns,
            filter: words,
            vips: self.trace_vips(),
            backends: self.trace_backends(),
            ..TraceStarted::default()
        })
    }

    /// Ends trace `id` now.
    pub fn stop_trace(&mut self, id: u64) -> Result<()> {
        match self.trace {
            Some(t) if t.id == id => self.end_trace("stopped"),
            Some(t) => bail!("trace {id} is not the one running (trace {})", t.id),
            None => bail!("no trace runs (trace {id} ended)"),
        }
    }

    /// Ends the trace if its deadline has passed; call periodically. The
    /// data plane stops recording at the deadline on its own: this takes
    /// the flag test's branch back off.
    pub fn expire_trace(&mut self, now: Instant) -> Result<()> {
        match self.trace {
            Some(t) if now >= t.until => self.end_trace("reached its deadline"),
            _ => Ok(()),
        }
    }

    /// Whether a trace runs.
    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Ends the trace that runs, if one does: the daemon exits, and no
    /// one will read the records.
    pub fn end_tracing(&mut self) -> Result<()> {
        self.end_trace("ended: the control plane exits")
    }

    fn end_trace(&mut self, how: &str) -> Result<()> {
        let Some(t) = self.trace.take() else {
            return Ok(());
        };
        if let Err(e) = self.write_lb_config() {
            // Still set: the next refresh tries again.
            self.trace = Some(t);
            return Err(e);
        }
        // Nothing matches a filter whose time is up, should the flag come
        // back without one.
        self.maps.set_trace_filter(&TraceFilter::default())?;
        tracing::info!(trace = t.id, "trace {how}");
        Ok(())
    }

    fn trace_vips(&self) -> Vec<TraceVip> {
        self.vips
            .values()
            .map(|v| TraceVip {
                index: v.index,
                name: v.name().to_owned(),
            })
            .collect()
    }

    /// Every backend id in use, retiring ones included (their flows go
    /// on).
    fn trace_backends(&self) -> Vec<TraceBackend> {
        let mut out = Vec::new();
        for (key, vip) in &self.vips {
            for b in vip.backends.iter().chain(self.retiring.of(key)) {
                out.push(TraceBackend {
                    id: b.id,
                    vip: vip.name().to_owned(),
                    name: b.config.name.clone(),
                    address: b.config.address.to_string(),
                });
            }
        }
        out.sort_by_key(|b| b.id);
        out
    }
}

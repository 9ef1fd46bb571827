//! The node-exporter textfile of a reconcile run (`seckill reconcile --metrics-file`).

use super::{Class, ReconcileReport};
use crate::metrics::{textfile, Gauge, RECONCILE_DRIFT, RECONCILE_LAST_RUN};

/// Drift findings that need attention: everything but reservations still in flight. With
/// `fixed`, what is left after the repairs.
pub fn drift_count(report: &ReconcileReport, fixed: bool) -> usize {
    let findings = if fixed { &report.remaining } else { &report.findings };
    findings.iter().filter(|f| f.class != Class::InFlight).count()
}

/// The textfile: drift and the time of the run (unix seconds), both labelled with the
/// activity so one file per activity can sit side by side in the collector directory.
pub fn render(report: &ReconcileReport, fixed: bool, now_secs: u64) -> String {
    render_all(std::slice::from_ref(report), fixed, now_secs)
}

/// The textfile of `reconcile --all`: the gauges of every activity checked, one line per
/// activity, grouped by metric as the format requires. An activity that could not be
/// checked is absent, so its last-run gauge goes stale and the staleness alert fires.
pub fn render_all(reports: &[ReconcileReport], fixed: bool, now_secs: u64) -> String {
    let drift = reports.iter().map(|report| Gauge {
        name: RECONCILE_DRIFT,
        help: "Drift findings of the last reconcile (in-flight reservations excluded).",
        labels: vec![("activity", report.activity_id.to_string())],
        value: drift_count(report, fixed) as f64,
    });
    let last_run = reports.iter().map(|report| Gauge {
        name: RECONCILE_LAST_RUN,
        help: "When reconcile last completed a check (unix seconds).",
        labels: vec![("activity", report.activity_id.to_string())],
        value: now_secs as f64,
    });
    textfile(&drift.chain(last_run).collect::<Vec<_>>())
}

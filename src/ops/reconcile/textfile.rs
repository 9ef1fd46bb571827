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
    let activity = report.activity_id.to_string();
    textfile(&[
        Gauge {
            name: RECONCILE_DRIFT,
            help: "Drift findings of the last reconcile (in-flight reservations excluded).",
            labels: vec![("activity", activity.clone())],
            value: drift_count(report, fixed) as f64,
        },
        Gauge {
            name: RECONCILE_LAST_RUN,
            help: "When reconcile last completed a check (unix seconds).",
            labels: vec![("activity", activity)],
            value: now_secs as f64,
        },
    ])
}

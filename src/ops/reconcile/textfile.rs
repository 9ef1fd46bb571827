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
    render_all(std::slice::from_ref(report), &[], fixed, now_secs)
}

/// The gauges an earlier run wrote for an activity that could not be checked now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Carried {
    /// The activity.
    pub activity_id: u64,
    /// Its drift then.
    pub drift: f64,
    /// When it was last checked (unix seconds).
    pub last_run: f64,
}

/// `activity`'s gauges in a textfile this module wrote before, if it has them.
pub fn previous(text: &str, activity: u64) -> Option<Carried> {
    let value = |name: &str| {
        let series = format!("{name}{{activity=\"{activity}\"}}");
        text.lines().find_map(|line| {
            let (s, v) = line.rsplit_once(' ')?;
            (s == series).then(|| v.parse::<f64>().ok()).flatten()
        })
    };
    Some(Carried {
        activity_id: activity,
        drift: value(RECONCILE_DRIFT)?,
        last_run: value(RECONCILE_LAST_RUN)?,
    })
}

/// The textfile of `reconcile --all`: the gauges of every activity checked, one line per
/// activity, grouped by metric as the format requires. An activity that could not be
/// checked keeps the gauges of its last check (`carried`), so its last-run time goes stale
/// and the staleness alert fires, instead of its series vanishing.
pub fn render_all(reports: &[ReconcileReport], carried: &[Carried], fixed: bool, now_secs: u64) -> String {
    let checked = reports
        .iter()
        .map(|r| (r.activity_id, drift_count(r, fixed) as f64, now_secs as f64));
    let carried = carried.iter().map(|c| (c.activity_id, c.drift, c.last_run));
    let mut rows: Vec<(u64, f64, f64)> = checked.chain(carried).collect();
    rows.sort_by_key(|row| row.0);
    let drift = rows.iter().map(|&(activity, drift, _)| Gauge {
        name: RECONCILE_DRIFT,
        help: "Drift findings of the last reconcile (in-flight reservations excluded).",
        labels: vec![("activity", activity.to_string())],
        value: drift,
    });
    let last_run = rows.iter().map(|&(activity, _, last_run)| Gauge {
        name: RECONCILE_LAST_RUN,
        help: "When reconcile last completed a check (unix seconds).",
        labels: vec![("activity", activity.to_string())],
        value: last_run,
    });
    textfile(&drift.chain(last_run).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_gauges_are_read_back_as_written() {
        let text = render_all(
            &[],
            &[Carried {
                activity_id: 7,
                drift: 2.0,
                last_run: 1_700_000_000.0,
            }],
            false,
            0,
        );
        assert_eq!(
            previous(&text, 7),
            Some(Carried {
                activity_id: 7,
                drift: 2.0,
                last_run: 1_700_000_000.0
            })
        );
        assert_eq!(previous(&text, 70), None);
        assert_eq!(previous("", 7), None);
    }
}

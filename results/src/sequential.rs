//! The stopping rule of `repetitions: auto`: rounds run until every cohort's change against the
//! baseline is decided, and looking after every round must not raise the error rate.
//!
//! Each round runs every cohort once, interleaved, so a cohort and the baseline share the
//! round's drift; the rule works on the per-round differences of log conn/s (the log of the
//! ratio), a paired one-sample problem. After round n (from round 3 on, look k = n − 2) it
//! forms a Student-t interval for the mean difference at level 1 − α/K, where K is the number
//! of looks the budget allows. By the union bound the chance that any interval the rule ever
//! looks at misses the true ratio is at most α, however the rounds fall and whenever the rule
//! stops: the intervals form a confidence sequence over the budget (Bonferroni's, the simplest
//! that is valid under any dependence between looks; it is conservative, so it spends rounds
//! for that safety). A decision is read off an interval that holds at that level:
//! - **changed**: the interval excludes no change and the estimate is at least the practical
//!   threshold ("faster by X% [CI]");
//! - **no change larger than the threshold**: the interval lies inside ±threshold;
//! - otherwise another round, until the budget ends ("undecided", with about how many more
//!   rounds the noise seen would need).

use std::collections::BTreeMap;

use crate::stats::two_sided_p;

/// The error rate the rule keeps over all its looks.
pub const ALPHA: f64 = 0.05;
/// Rounds before the first look: a t interval needs two degrees of freedom to be finite-ish.
pub(crate) const FIRST_LOOK: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Faster,
    Slower,
    /// Judged on CPU per connection: less CPU per connection than the baseline.
    Cheaper,
    /// Judged on CPU per connection: more.
    Dearer,
    /// The interval lies inside ±threshold.
    NoLargeChange,
    /// Not yet: another round is needed.
    Undecided,
}

/// What the rule judges a cohort on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgedMetric {
    #[default]
    ConnectionsPerSecond,
    /// The node's CPU time per connection: for a server that is not saturated, where conn/s
    /// only follows the load.
    CpuPerConnection,
}

impl JudgedMetric {
    /// " in CPU per connection", or nothing for conn/s (the rule's usual subject).
    fn in_words(self) -> &'static str {
        match self {
            JudgedMetric::ConnectionsPerSecond => "",
            JudgedMetric::CpuPerConnection => " in CPU per connection",
        }
    }
}

/// What the rule says about one cohort after some rounds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judgement {
    /// Rounds with both the cohort and the baseline measured.
    pub rounds: usize,
    /// The cohort's value over the baseline's, minus one (e.g. -0.12 for 12% slower, or 12%
    /// cheaper per connection).
    pub change: f64,
    /// The interval of `change` at the rule's level for this look; `None` before the first.
    pub interval: Option<(f64, f64)>,
    pub decision: Decision,
    /// For an undecided cohort: about how many more rounds the noise seen would need.
    pub rounds_more: Option<usize>,
    /// What was judged.
    #[serde(default)]
    pub metric: JudgedMetric,
}

impl Judgement {
    /// "faster by 12.3% [8.1%, 16.7%]" and the like.
    pub fn describe(&self, threshold: f64) -> String {
        let interval = self.interval.map_or_else(String::new, |(low, high)| {
            format!(" [{:+.1}%, {:+.1}%]", low * 100.0, high * 100.0)
        });
        match self.decision {
            Decision::Faster => format!("faster by {:.1}%{interval}", self.change * 100.0),
            Decision::Slower => format!("slower by {:.1}%{interval}", -self.change * 100.0),
            Decision::Cheaper => format!(
                "cheaper by {:.1}% CPU per connection{interval}",
                -self.change * 100.0
            ),
            Decision::Dearer => format!(
                "dearer by {:.1}% CPU per connection{interval}",
                self.change * 100.0
            ),
            Decision::NoLargeChange => format!(
                "no change larger than ±{:.0}%{} ({:+.1}%{interval})",
                threshold * 100.0,
                self.metric.in_words(),
                self.change * 100.0
            ),
            Decision::Undecided => {
                let more = self
                    .rounds_more
                    .map(|n| {
                        let rounds = if n == 1 { "round" } else { "rounds" };
                        format!(": about {n} more {rounds} would be needed at this noise")
                    })
                    .unwrap_or_default();
                format!(
                    "undecided{} {:+.1}%{interval}{more}",
                    self.metric.in_words(),
                    self.change * 100.0
                )
            }
        }
    }
}

/// The log of the judged metric for every succeeded run by (cohort, round): what the rule
/// reads.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    metric: JudgedMetric,
    values: BTreeMap<(String, u32), Vec<f64>>,
}

impl Rounds {
    pub fn of(metric: JudgedMetric) -> Self {
        Self {
            metric,
            values: BTreeMap::new(),
        }
    }

    /// Adds a run's value of the judged metric (conn/s, or µs of CPU per connection).
    pub fn add(&mut self, cohort: &str, round: u32, value: f64) {
        if value > 0.0 && value.is_finite() {
            self.values
                .entry((cohort.to_string(), round))
                .or_default()
                .push(value.ln());
        }
    }

    /// The highest round with a measured run.
    pub(crate) fn last_round(&self) -> u32 {
        self.values
            .keys()
            .map(|(_, round)| *round)
            .max()
            .unwrap_or(0)
    }

    /// Every cohort but the baseline judged over rounds 1..=`through`: a round's value is the
    /// mean over the cohort's nodes, and a round counts where both it and the baseline ran.
    pub fn judge(
        &self,
        cohorts: &[String],
        baseline: &str,
        through: u32,
        budget: u32,
        threshold: f64,
    ) -> Vec<(String, Judgement)> {
        let mean = |cohort: &str, round: u32| {
            self.values
                .get(&(cohort.to_string(), round))
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        };
        cohorts
            .iter()
            .filter(|c| c.as_str() != baseline)
            .map(|cohort| {
                let log_ratios: Vec<f64> = (1..=through)
                    .filter_map(|round| Some(mean(cohort, round)? - mean(baseline, round)?))
                    .collect();
                let mut judgement = judge(&log_ratios, budget as usize, threshold);
                judgement.metric = self.metric;
                // More CPU per connection is worse: the change is in µs per connection.
                if self.metric == JudgedMetric::CpuPerConnection {
                    judgement.decision = match judgement.decision {
                        Decision::Faster => Decision::Dearer,
                        Decision::Slower => Decision::Cheaper,
                        other => other,
                    };
                }
                (cohort.clone(), judgement)
            })
            .collect()
    }
}

/// What the rule says after a round: every cohort but the baseline judged, and whether the
/// experiment stops here.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundJudgement {
    pub round: u32,
    pub budget: u32,
    /// The practical change, as a fraction.
    pub threshold: f64,
    pub judgements: Vec<(String, Judgement)>,
    pub stops: bool,
}

impl RoundJudgement {
    /// Each cohort's judgement, `cohort: text`.
    pub fn lines(&self) -> Vec<String> {
        self.judgements
            .iter()
            .map(|(cohort, j)| format!("{cohort}: {}", j.describe(self.threshold)))
            .collect()
    }

    /// Why the rounds stop here; `None` while they go on.
    pub fn stop_reason(&self) -> Option<String> {
        if !self.stops {
            return None;
        }
        let undecided: Vec<&str> = self
            .judgements
            .iter()
            .filter(|(_, j)| j.decision == Decision::Undecided)
            .map(|(cohort, _)| cohort.as_str())
            .collect();
        Some(if undecided.is_empty() {
            format!(
                "stopped after round {} of at most {}: every cohort is decided",
                self.round, self.budget
            )
        } else {
            format!(
                "stopped at the budget, round {}: {} undecided",
                self.round,
                undecided.join(", ")
            )
        })
    }
}

/// Whether every judgement has decided.
pub fn all_decided(judgements: &[(String, Judgement)]) -> bool {
    judgements
        .iter()
        .all(|(_, j)| j.decision != Decision::Undecided)
}

/// Judges the per-round log-ratios seen so far (cohort over baseline, one per round that has
/// both), with `budget` rounds allowed in all and a practical `threshold` (0.05 for 5%).
pub fn judge(log_ratios: &[f64], budget: usize, threshold: f64) -> Judgement {
    let rounds = log_ratios.len();
    let mean = if rounds == 0 {
        0.0
    } else {
        log_ratios.iter().sum::<f64>() / rounds as f64
    };
    let undecided = |interval, rounds_more| Judgement {
        rounds,
        change: mean.exp() - 1.0,
        interval,
        decision: Decision::Undecided,
        rounds_more,
        metric: JudgedMetric::default(),
    };
    if rounds < FIRST_LOOK {
        return undecided(None, Some(FIRST_LOOK - rounds));
    }
    let variance = log_ratios.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (rounds - 1) as f64;
    let t = t_quantile((rounds - 1) as f64, look_alpha(budget));
    let half = t * (variance / rounds as f64).sqrt();
    let (low, high) = (mean - half, mean + half);
    let interval = Some((low.exp() - 1.0, high.exp() - 1.0));
    let limit = (1.0 + threshold).ln();
    let decision = if (low > 0.0 || high < 0.0) && mean.abs() >= limit {
        if mean > 0.0 {
            Decision::Faster
        } else {
            Decision::Slower
        }
    } else if low > -limit && high < limit {
        Decision::NoLargeChange
    } else {
        Decision::Undecided
    };
    if decision != Decision::Undecided {
        return Judgement {
            rounds,
            change: mean.exp() - 1.0,
            interval,
            decision,
            rounds_more: None,
            metric: JudgedMetric::default(),
        };
    }
    // The nearer of the two ways to decide: the interval narrowing past no change (when the
    // estimate is at least the threshold), or inside ±threshold.
    let margin = if mean.abs() >= limit {
        mean.abs()
    } else {
        limit - mean.abs()
    };
    let needed = if variance > 0.0 && margin > 0.0 {
        ((t * variance.sqrt() / margin).powi(2)).ceil() as usize
    } else {
        rounds + 1
    };
    undecided(interval, Some(needed.saturating_sub(rounds).max(1)))
}

/// Each look's share of α: the budget allows `budget - FIRST_LOOK + 1` looks.
pub(crate) fn look_alpha(budget: usize) -> f64 {
    let looks = budget.saturating_sub(FIRST_LOOK).saturating_add(1).max(1);
    ALPHA / looks as f64
}

/// The t with P(|T| > t) = `alpha` for `df` degrees of freedom.
pub(crate) fn t_quantile(df: f64, alpha: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 1.0e6_f64);
    while high - low > 1e-9 * high.max(1.0) {
        let mid = 0.5 * (low + high);
        if two_sided_p(mid, df) > alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) and Box-Muller normals: the simulations
    /// below must give the same answer every time.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-300), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// Runs A/A experiments (no true change, per-round noise `sd` in log conn/s) with the rule
    /// looking after every round; the share that ever says "faster" or "slower".
    fn false_change_rate(rule: impl Fn(&[f64]) -> Decision, budget: usize, sd: f64) -> f64 {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let experiments = 4000;
        let mut false_changes = 0;
        for _ in 0..experiments {
            let mut rounds = Vec::new();
            for _ in 0..budget {
                rounds.push(sd * noise.normal());
                let decision = rule(&rounds);
                if matches!(decision, Decision::Faster | Decision::Slower) {
                    false_changes += 1;
                    break;
                }
                if decision == Decision::NoLargeChange {
                    break;
                }
            }
        }
        f64::from(false_changes) / f64::from(experiments)
    }

    #[test]
    fn looking_after_every_round_keeps_the_false_change_rate_under_alpha() {
        // Noise of 5% per round, a threshold of 0 (any change counts): the hardest case for
        // the error rate, since nothing but the interval stands between noise and a verdict.
        let ours = false_change_rate(|r| judge(r, 20, 0.0).decision, 20, 0.05);
        assert!(ours <= ALPHA, "false changes {ours}");
        // The same looks with a plain 95% interval each time: far above α, which is why the
        // rule spends α over its looks.
        let naive = false_change_rate(
            |r| {
                if r.len() < FIRST_LOOK {
                    return Decision::Undecided;
                }
                let n = r.len() as f64;
                let mean = r.iter().sum::<f64>() / n;
                let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                let half = t_quantile(n - 1.0, 0.05) * sd / n.sqrt();
                if mean - half > 0.0 || mean + half < 0.0 {
                    Decision::Faster
                } else {
                    Decision::Undecided
                }
            },
            20,
            0.05,
        );
        eprintln!("false changes over 4,000 A/A experiments: the rule {ours}, naive looks {naive}");
        assert!(naive > 2.0 * ALPHA, "naive looks gave only {naive}");
    }

    #[test]
    fn a_clear_change_is_decided_and_named_with_its_interval() {
        // 10% slower every round, give or take 1%.
        let rounds = [-0.105, -0.095, -0.11, -0.1, -0.09, -0.1];
        let judged = judge(&rounds.map(|r: f64| (1.0 + r).ln()), 20, 0.05);
        assert_eq!(judged.decision, Decision::Slower, "{judged:?}");
        let (low, high) = judged.interval.unwrap();
        assert!(low < judged.change && judged.change < high && high < 0.0);
        let text = judged.describe(0.05);
        assert!(text.starts_with("slower by 10.0% ["), "{text}");
    }

    #[test]
    fn judged_on_cpu_per_connection_more_is_dearer() {
        let mut rounds = Rounds::of(JudgedMetric::CpuPerConnection);
        // µs per connection: the cohort takes 20% more CPU per connection, give or take.
        for (round, (base, cohort)) in [(50.0, 60.5), (51.0, 60.9), (49.0, 59.0), (50.5, 60.4)]
            .into_iter()
            .enumerate()
        {
            rounds.add("base", round as u32 + 1, base);
            rounds.add("cohort", round as u32 + 1, cohort);
        }
        let cohorts = ["base".to_string(), "cohort".to_string()];
        let judged = rounds.judge(&cohorts, "base", 4, 20, 0.05);
        let (_, judgement) = &judged[0];
        assert_eq!(judgement.decision, Decision::Dearer, "{judgement:?}");
        let text = judgement.describe(0.05);
        assert!(
            text.starts_with("dearer by 20.1% CPU per connection ["),
            "{text}"
        );
        assert!(text.contains("CPU per connection"), "{text}");
        // The same figures as conn/s would be "faster": the metric sets the direction.
        let mut as_rate = Rounds::of(JudgedMetric::ConnectionsPerSecond);
        for round in 1..=4 {
            as_rate.add("base", round, 50.0 + f64::from(round) * 0.1);
            as_rate.add("cohort", round, 60.0 + f64::from(round) * 0.1);
        }
        let (_, judgement) = &as_rate.judge(&cohorts, "base", 4, 20, 0.05)[0];
        assert_eq!(judgement.decision, Decision::Faster, "{judgement:?}");
        assert!(!judgement.describe(0.05).contains("CPU"));
    }

    #[test]
    fn no_change_is_decided_once_the_interval_fits_inside_the_threshold() {
        let rounds = [0.004, -0.003, 0.002, -0.001, 0.003, -0.002, 0.001, 0.0];
        let judged = judge(&rounds, 20, 0.05);
        assert_eq!(judged.decision, Decision::NoLargeChange, "{judged:?}");
        assert!(
            judged
                .describe(0.05)
                .starts_with("no change larger than ±5%")
        );
    }

    #[test]
    fn noise_leaves_it_undecided_with_an_estimate_of_the_rounds_still_needed() {
        let rounds = [0.08, -0.06, 0.05, -0.07];
        let judged = judge(&rounds, 20, 0.05);
        assert_eq!(judged.decision, Decision::Undecided);
        assert!(judged.rounds_more.is_some_and(|n| n > 1), "{judged:?}");
        assert!(
            judged
                .describe(0.05)
                .contains("more rounds would be needed")
        );
        // Before the first look there is no interval, only the rounds still to come.
        let early = judge(&[0.1], 20, 0.05);
        assert_eq!((early.interval, early.rounds_more), (None, Some(2)));
    }

    /// The intervals SciPy computes for the same samples and budgets
    /// (`tests/reference/sequential.py` wrote `sequential.json`).
    #[test]
    fn intervals_match_scipy() {
        let reference: serde_json::Value =
            serde_json::from_str(include_str!("../tests/reference/sequential.json")).unwrap();
        let cases = reference["cases"].as_array().unwrap();
        assert!(cases.len() >= 8);
        let near = |ours: f64, theirs: &serde_json::Value| {
            let theirs = theirs.as_f64().unwrap();
            (ours - theirs).abs() <= 1e-6 * theirs.abs().max(1e-3)
        };
        for case in cases {
            let log_ratios: Vec<f64> = case["log_ratios"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let budget = case["budget"].as_u64().unwrap() as usize;
            let t = t_quantile((log_ratios.len() - 1) as f64, look_alpha(budget));
            assert!(near(t, &case["t"]), "t {t} vs {}", case["t"]);
            let judged = judge(&log_ratios, budget, 0.05);
            let (low, high) = judged.interval.unwrap();
            assert!(near(judged.change, &case["change"]), "{case}");
            assert!(near(low, &case["low"]), "low {low} vs {}", case["low"]);
            assert!(near(high, &case["high"]), "high {high} vs {}", case["high"]);
        }
    }

    #[test]
    fn quantiles_match_published_tables() {
        assert!((t_quantile(10.0, 0.05) - 2.228).abs() < 1e-3);
        assert!((t_quantile(4.0, 0.01) - 4.604).abs() < 1e-3);
        assert!((look_alpha(20) - 0.05 / 18.0).abs() < 1e-12);
        assert_eq!(look_alpha(1), 0.05);
    }
}

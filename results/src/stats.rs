//! Statistics for comparing cohorts: per-cohort summaries and, against a baseline, the ratio of
//! geometric means with a Welch confidence interval computed on log conn/s, Hedges' g, a
//! p-value and a verdict with noise flags.
//!
//! Why logs: throughput ratios are multiplicative, run-to-run noise is roughly proportional to
//! the level, and a CI for a difference of log means maps back to a CI for a ratio exactly.

use serde::{Deserialize, Serialize};

/// How comparisons are computed, for readers of the API.
pub const METHOD: &str = "per-run steady-state conn/s; ratio of geometric means with a Welch t 95% confidence interval on log conn/s; Hedges' g on conn/s; verdict needs the interval to exclude 1 and a change of at least 1%; noisy when a cohort's coefficient of variation exceeds 5% or it has fewer than 3 runs";

/// A relative change smaller than this is "no detectable change" even when significant.
pub(crate) const MIN_EFFECT: f64 = 0.01;
/// Coefficient of variation above which a cohort is flagged noisy.
pub(crate) const NOISY_CV: f64 = 0.05;
/// Fewer runs than this are flagged as too few.
pub(crate) const ENOUGH_RUNS: usize = 3;
/// The change a fixed design is sized against when it says how many runs would decide it.
pub(crate) const PRACTICAL_CHANGE: f64 = 0.05;
/// The 80th percentile of the standard normal: a design's minimum detectable change is the one
/// it finds 80% of the time (power 0.8) at the 95% level.
const Z_POWER: f64 = 0.841_621_233_572_914_3;
const Z_975: f64 = 1.959_963_984_540_054;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a single value.
    pub sd: f64,
    /// sd / mean.
    pub cv: f64,
    /// 95% confidence interval of the mean (Student's t); absent for a single value.
    #[serde(default)]
    pub ci95: Option<(f64, f64)>,
}

/// The 95% confidence interval of a mean from n values with sample standard deviation sd.
fn mean_ci95(n: usize, mean: f64, sd: f64) -> Option<(f64, f64)> {
    (n > 1).then(|| {
        let half = student_t_quantile_975((n - 1) as f64) * sd / (n as f64).sqrt();
        (mean - half, mean + half)
    })
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    // Summed in sorted order: runs folded in the order they committed and read back in
    // another give the same figures to the last bit.
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let values = sorted.as_slice();
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let cv = if mean != 0.0 { sd / mean.abs() } else { 0.0 };
    Some(Summary {
        n,
        mean,
        sd,
        cv,
        ci95: mean_ci95(n, mean, sd),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    NoDetectableChange,
    /// Fewer than two runs on a side: nothing can be said.
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "faster",
            Verdict::Regressed => "slower",
            Verdict::NoDetectableChange => "no detectable change",
            Verdict::InsufficientData => "too few runs to tell",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseFlag {
    /// A side's coefficient of variation is above 5%.
    HighVariation,
    /// A side has fewer than three runs.
    TooFewRuns,
}

/// A cohort against the baseline (higher is better: conn/s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Ratio of geometric means, candidate / baseline.
    pub ratio: f64,
    /// 95% confidence interval of the ratio; absent with fewer than two runs on a side.
    pub ci95: Option<(f64, f64)>,
    pub hedges_g: Option<f64>,
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    pub flags: Vec<NoiseFlag>,
    /// The smallest change (a fraction, either way) these runs would detect 80% of the time at
    /// the 95% level, given the noise they showed: exp((t + z₀.₈) · standard error of the log
    /// ratio) − 1. What "no detectable change" rules out, and what it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_detectable_change: Option<f64>,
    /// Runs per cohort that would detect a change of `PRACTICAL_CHANGE` (5%) 80% of the time
    /// at this noise, when these runs are too few for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_for_practical_change: Option<u64>,
}

/// Compares a candidate's per-run values with the baseline's. Values must be positive.
pub fn compare(baseline: &[f64], candidate: &[f64]) -> Option<Comparison> {
    if baseline.is_empty() || candidate.is_empty() {
        return None;
    }
    if baseline
        .iter()
        .chain(candidate)
        .any(|v| !v.is_finite() || *v <= 0.0)
    {
        return None;
    }
    let log_a: Vec<f64> = baseline.iter().map(|v| v.ln()).collect();
    let log_b: Vec<f64> = candidate.iter().map(|v| v.ln()).collect();
    Some(compare_summaries(
        (summarize(&log_a)?, summarize(baseline)?),
        (summarize(&log_b)?, summarize(candidate)?),
    ))
}

/// Summary statistics kept as sums, so groups of runs merge exactly (and a database can
/// compute them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    pub n: u64,
    pub sum: f64,
    pub sum_squares: f64,
    pub sum_logs: f64,
    pub sum_log_squares: f64,
}

impl Sums {
    pub fn add(&mut self, other: &Sums) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
        self.sum_logs += other.sum_logs;
        self.sum_log_squares += other.sum_log_squares;
    }

    fn summary(n: u64, sum: f64, sum_squares: f64) -> Option<Summary> {
        if n == 0 {
            return None;
        }
        let count = n as f64;
        let mean = sum / count;
        let sd = if n > 1 {
            ((sum_squares - count * mean * mean) / (count - 1.0))
                .max(0.0)
                .sqrt()
        } else {
            0.0
        };
        let cv = if mean != 0.0 { sd / mean.abs() } else { 0.0 };
        Some(Summary {
            n: n as usize,
            mean,
            sd,
            cv,
            ci95: mean_ci95(n as usize, mean, sd),
        })
    }

    /// Summary of the values.
    pub fn values(&self) -> Option<Summary> {
        Self::summary(self.n, self.sum, self.sum_squares)
    }

    /// Summary of the values' natural logs.
    pub fn logs(&self) -> Option<Summary> {
        Self::summary(self.n, self.sum_logs, self.sum_log_squares)
    }
}

/// Compares from sums (see [`Sums`]); values must have been positive.
pub(crate) fn compare_sums(baseline: &Sums, candidate: &Sums) -> Option<Comparison> {
    Some(compare_summaries(
        (baseline.logs()?, baseline.values()?),
        (candidate.logs()?, candidate.values()?),
    ))
}

/// The comparison from each side's (log summary, value summary).
fn compare_summaries((la, a): (Summary, Summary), (lb, b): (Summary, Summary)) -> Comparison {
    let ratio = (lb.mean - la.mean).exp();
    let mut flags = Vec::new();
    if a.n < ENOUGH_RUNS || b.n < ENOUGH_RUNS {
        flags.push(NoiseFlag::TooFewRuns);
    }
    if a.cv > NOISY_CV || b.cv > NOISY_CV {
        flags.push(NoiseFlag::HighVariation);
    }
    if a.n < 2 || b.n < 2 {
        return Comparison {
            ratio,
            ci95: None,
            hedges_g: None,
            p_value: None,
            verdict: Verdict::InsufficientData,
            flags,
            min_detectable_change: None,
            runs_for_practical_change: None,
        };
    }

    let (mut detectable, mut runs_needed) = (None, None);
    let (va, vb) = (la.sd.powi(2) / la.n as f64, lb.sd.powi(2) / lb.n as f64);
    let se = (va + vb).sqrt();
    let diff = lb.mean - la.mean;
    let (ci95, p_value) = if se > 0.0 {
        let df =
            (va + vb).powi(2) / (va.powi(2) / (la.n - 1) as f64 + vb.powi(2) / (lb.n - 1) as f64);
        let t = student_t_quantile_975(df);
        let ci = ((diff - t * se).exp(), (diff + t * se).exp());
        detectable = Some(((t + Z_POWER) * se).exp() - 1.0);
        // Per cohort, with large-sample quantiles: (z₀.₉₇₅ + z₀.₈)² (s_a² + s_b²) / ln(1.05)².
        let needed = ((Z_975 + Z_POWER).powi(2) * (la.sd.powi(2) + lb.sd.powi(2))
            / (1.0 + PRACTICAL_CHANGE).ln().powi(2))
        .ceil()
        .max(2.0);
        if detectable.is_some_and(|d| d > PRACTICAL_CHANGE) && needed.is_finite() {
            runs_needed = Some(needed as u64);
        }
        (Some(ci), Some(two_sided_p(diff / se, df)))
    } else {
        // Identical runs on both sides: the difference is exact.
        (
            Some((ratio, ratio)),
            Some(if diff == 0.0 { 1.0 } else { 0.0 }),
        )
    };

    let pooled = (((a.n - 1) as f64 * a.sd.powi(2) + (b.n - 1) as f64 * b.sd.powi(2))
        / (a.n + b.n - 2) as f64)
        .sqrt();
    let hedges_g = (pooled > 0.0).then(|| {
        let correction = 1.0 - 3.0 / (4.0 * (a.n + b.n) as f64 - 9.0);
        correction * (b.mean - a.mean) / pooled
    });

    let verdict = match ci95 {
        Some((low, _)) if low > 1.0 && ratio - 1.0 >= MIN_EFFECT => Verdict::Improved,
        Some((_, high)) if high < 1.0 && 1.0 - ratio >= MIN_EFFECT => Verdict::Regressed,
        _ => Verdict::NoDetectableChange,
    };
    Comparison {
        ratio,
        ci95,
        hedges_g,
        p_value,
        verdict,
        flags,
        min_detectable_change: detectable,
        runs_for_practical_change: runs_needed,
    }
}

/// The 97.5th percentile of Student's t with `df` degrees of freedom (two-sided 95%).
pub(crate) fn student_t_quantile_975(df: f64) -> f64 {
    // Solve P(|T| > t) = 0.05 by bisection: the tail probability falls monotonically in t.
    // From one degree of freedom up the quantile is at most 12.71; below that the tails are
    // heavier still. Bisection stops at 1e-12, far below any printed digit.
    let mut high = if df >= 1.0 { 13.0 } else { 1.0e3 };
    let mut low = 0.0_f64;
    while high - low > 1e-12 {
        let mid = 0.5 * (low + high);
        if two_sided_p(mid, df) > 0.05 {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// P(|T| > |t|) for Student's t with `df` degrees of freedom.
pub(crate) fn two_sided_p(t: f64, df: f64) -> f64 {
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

/// Lentz's method for the continued fraction of the incomplete beta function.
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let even = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn t_quantiles_match_published_tables() {
        // Two-sided 95% critical values of Student's t.
        for (df, expected) in [
            (1.0, 12.7062),
            (2.0, 4.3027),
            (4.0, 2.7764),
            (10.0, 2.2281),
            (30.0, 2.0423),
            (1000.0, 1.9623),
        ] {
            let t = student_t_quantile_975(df);
            assert!(close(t, expected, 5e-4), "df {df}: {t} vs {expected}");
        }
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-12));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    #[test]
    fn summary_uses_the_sample_standard_deviation() {
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert!(close(s.mean, 5.0, 1e-12));
        assert!(close(s.sd, (32.0f64 / 7.0).sqrt(), 1e-12));
        // t(0.975, 7) = 2.3646: the mean's interval is 5 ± 2.3646 × sd / √8.
        let (low, high) = s.ci95.unwrap();
        assert!(close(
            high - 5.0,
            2.3646 * (32.0f64 / 7.0).sqrt() / 8f64.sqrt(),
            1e-3
        ));
        assert!(close(5.0 - low, high - 5.0, 1e-12));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[3.0]).unwrap().sd, 0.0);
        assert_eq!(summarize(&[3.0]).unwrap().ci95, None);
    }

    #[test]
    fn a_clear_improvement_is_called_faster() {
        let baseline = [1000.0, 1010.0, 990.0, 1005.0, 995.0];
        let patched = [1600.0, 1610.0, 1590.0, 1605.0, 1595.0];
        let c = compare(&baseline, &patched).unwrap();
        assert!(close(c.ratio, 1.6, 0.001), "{c:?}");
        let (low, high) = c.ci95.unwrap();
        assert!(low > 1.55 && high < 1.65 && low < c.ratio && c.ratio < high);
        assert_eq!(c.verdict, Verdict::Improved);
        assert!(c.p_value.unwrap() < 1e-6);
        assert!(c.hedges_g.unwrap() > 10.0);
        assert!(c.flags.is_empty());
        assert_eq!(
            compare(&patched, &baseline).unwrap().verdict,
            Verdict::Regressed
        );
    }

    #[test]
    fn overlapping_noise_is_no_detectable_change() {
        let a = [1000.0, 1100.0, 900.0];
        let b = [1050.0, 950.0, 1010.0];
        let c = compare(&a, &b).unwrap();
        assert_eq!(c.verdict, Verdict::NoDetectableChange);
        let (low, high) = c.ci95.unwrap();
        assert!(low < 1.0 && high > 1.0);
        assert!(c.flags.contains(&NoiseFlag::HighVariation));
        assert!(c.p_value.unwrap() > 0.05);
    }

    #[test]
    fn welch_interval_matches_a_hand_computation() {
        // logs of a: ln 100, ln 110, ln 121 (steps of ln 1.1); b: the same times 1.21.
        let a = [100.0, 110.0, 121.0];
        let b = [121.0, 133.1, 146.41];
        let c = compare(&a, &b).unwrap();
        assert!(close(c.ratio, 1.21, 1e-9));
        // Both sides have log sd = ln 1.1; se = ln(1.1) * sqrt(2/3); df = 4.
        let se = 1.1f64.ln() * (2.0f64 / 3.0).sqrt();
        let half = 2.776_445 * se;
        let (low, high) = c.ci95.unwrap();
        assert!(close(low, (1.21f64.ln() - half).exp(), 1e-4), "{low}");
        assert!(close(high, (1.21f64.ln() + half).exp(), 1e-4), "{high}");
    }

    #[test]
    fn a_design_says_the_smallest_change_it_detects_and_the_runs_a_5_percent_change_needs() {
        // The hand computation above: log sd ln 1.1 on both sides, three runs each, df 4.
        let a = [100.0, 110.0, 121.0];
        let b = [121.0, 133.1, 146.41];
        let c = compare(&a, &b).unwrap();
        let se = 1.1f64.ln() * (2.0f64 / 3.0).sqrt();
        let expected = ((2.776_445 + 0.841_621) * se).exp() - 1.0;
        let mde = c.min_detectable_change.unwrap();
        assert!(close(mde, expected, 1e-4), "{mde} vs {expected}");
        // (1.96 + 0.8416)^2 * 2 (ln 1.1)^2 / (ln 1.05)^2 = 59.9: 60 runs per cohort.
        assert_eq!(c.runs_for_practical_change, Some(60));
        // Quiet runs detect under 5% already: no runs to ask for.
        let quiet = compare(&[1000.0, 1002.0, 998.0], &[1001.0, 999.0, 1003.0]).unwrap();
        assert!(quiet.min_detectable_change.unwrap() < PRACTICAL_CHANGE);
        assert_eq!(quiet.runs_for_practical_change, None);
        // One run a side: nothing to size.
        let single = compare(&[1000.0], &[1100.0]).unwrap();
        assert_eq!(single.min_detectable_change, None);
    }

    #[test]
    fn sums_give_the_same_comparison_as_values() {
        let sums = |values: &[f64]| Sums {
            n: values.len() as u64,
            sum: values.iter().sum(),
            sum_squares: values.iter().map(|v| v * v).sum(),
            sum_logs: values.iter().map(|v| v.ln()).sum(),
            sum_log_squares: values.iter().map(|v| v.ln().powi(2)).sum(),
        };
        let (a, b) = ([1000.0, 1100.0, 900.0, 1050.0], [1500.0, 1580.0, 1610.0]);
        let direct = compare(&a, &b).unwrap();
        let mut merged = sums(&a[..2]);
        merged.add(&sums(&a[2..]));
        let from_sums = compare_sums(&merged, &sums(&b)).unwrap();
        assert_eq!(direct.verdict, from_sums.verdict);
        assert!(close(direct.ratio, from_sums.ratio, 1e-9));
        let (d, f) = (direct.ci95.unwrap(), from_sums.ci95.unwrap());
        assert!(close(d.0, f.0, 1e-6) && close(d.1, f.1, 1e-6));
        assert!(close(
            direct.hedges_g.unwrap(),
            from_sums.hedges_g.unwrap(),
            1e-6
        ));
    }

    #[test]
    fn single_runs_say_too_few_to_tell() {
        let c = compare(&[1000.0], &[1200.0]).unwrap();
        assert_eq!(c.verdict, Verdict::InsufficientData);
        assert!(c.ci95.is_none());
        assert_eq!(c.flags, vec![NoiseFlag::TooFewRuns]);
        assert!(compare(&[], &[1.0]).is_none());
        assert!(compare(&[0.0, 1.0], &[1.0, 2.0]).is_none());
    }
}

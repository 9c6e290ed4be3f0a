//! Leader election on a `coordination.k8s.io/v1` Lease, so two controller replicas never drive
//! the same experiment. A replica takes the lease when it is free or expired and renews it well
//! before it expires; every write carries the lease's `resourceVersion`, so of two replicas
//! racing for it the API server accepts one and answers the other 409.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

#[derive(Debug, Clone)]
pub(crate) struct LeaseLock {
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether `identity` may hold a lease in this state at `now`.
pub(crate) fn may_hold(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            spec.renew_time
                .as_ref()
                .is_none_or(|renewed| renewed.0 + SignedDuration::from_secs(seconds) < now)
        }
    }
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// How often to call [`LeaseLock::try_acquire_or_renew`]: a third of the lease, so two
    /// renewals can fail before it lapses.
    pub(crate) fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long after its last successful renewal began a leader may go on acting: two thirds
    /// of the lease. Another replica may take the lease once a whole lease has passed since
    /// that renewal, so a leader that cannot renew stops well before then.
    pub(crate) fn act_for(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Gives the lease up, when this replica holds it, so the next replica need not wait for
    /// it to expire. A lease that changed meanwhile (409) is left as it is.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Takes or renews the lease. `Ok(false)`: another replica holds it.
    pub(crate) async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_default();
        if !may_hold(spec, &self.identity, now) {
            return Ok(false);
        }
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration);
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// A lease that can be renewed: the Lease API, or a stand-in in tests.
pub(crate) trait Renew: Send + Sync {
    /// `Ok(true)`: renewed; `Ok(false)`: another replica holds it.
    fn renew(&self) -> impl Future<Output = Result<bool, kube::Error>> + Send;
}

impl Renew for LeaseLock {
    fn renew(&self) -> impl Future<Output = Result<bool, kube::Error>> + Send {
        self.try_acquire_or_renew()
    }
}

/// How holding a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// `stop` fired.
    Stopped,
    /// Another replica holds the lease.
    Lost,
    /// No renewal succeeded for `act_for`: this replica must stop acting.
    Lapsed,
}

/// Renews a lease just taken every `every` until `stop` fires, the lease is lost, or no renewal
/// has succeeded for `act_for` since the last one began (the lease was taken at the call).
/// A renewal that does not answer within `every` counts as failed, so a hung call cannot keep
/// a replica acting.
pub(crate) async fn keep_renewing(
    lease: &impl Renew,
    every: Duration,
    act_for: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> Holding {
    let mut acting_until = tokio::time::Instant::now() + act_for;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Holding::Stopped,
            () = tokio::time::sleep(every) => {}
            () = tokio::time::sleep_until(acting_until) => return Holding::Lapsed,
        }
        let renewal = tokio::time::Instant::now();
        tokio::select! {
            answer = tokio::time::timeout(every, lease.renew()) => match answer {
                Ok(Ok(true)) => acting_until = renewal + act_for,
                Ok(Ok(false)) => return Holding::Lost,
                Ok(Err(error)) => tracing::warn!(%error, "renewing the leader lease"),
                Err(_) => tracing::warn!("renewing the leader lease did not answer in time"),
            },
            () = tokio::time::sleep_until(acting_until) => return Holding::Lapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers renewals from a script: Some(answer), or None for a call that never returns.
    struct Scripted {
        answers: Vec<Option<bool>>,
        calls: AtomicUsize,
    }

    impl Renew for Scripted {
        async fn renew(&self) -> Result<bool, kube::Error> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            match self.answers.get(call).copied().flatten() {
                Some(answer) => Ok(answer),
                None if call < self.answers.len() => std::future::pending().await,
                None => Err(kube::Error::Service("the API server is away".into())),
            }
        }
    }

    async fn hold(answers: Vec<Option<bool>>, stop_after: Option<Duration>) -> (Holding, Duration) {
        let lease = Scripted {
            answers,
            calls: AtomicUsize::new(0),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(after) = stop_after {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                stop.cancel();
            });
        }
        let started = tokio::time::Instant::now();
        let ended = keep_renewing(
            &lease,
            Duration::from_secs(5),
            Duration::from_secs(10),
            &stop,
        )
        .await;
        (ended, started.elapsed())
    }

    // Time is virtual (paused): the durations are the schedule's, not the machine's.
    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_acting_before_its_lease_can_expire() {
        // Renewed twice, then every call fails: acting ends 10 s after the last good renewal
        // began (at 10 s), so at 20 s, before the 15 s lease could lapse at 25 s.
        let (ended, after) = hold(vec![Some(true), Some(true)], None).await;
        assert_eq!(ended, Holding::Lapsed);
        assert_eq!(after, Duration::from_secs(20));
        // A renewal that hangs counts as failed too.
        let (ended, after) = hold(vec![Some(true), None], None).await;
        assert_eq!(ended, Holding::Lapsed);
        assert_eq!(after, Duration::from_secs(15));
        // Another replica took it.
        let (ended, _) = hold(vec![Some(true), Some(false)], None).await;
        assert_eq!(ended, Holding::Lost);
        // Renewing well until told to stop.
        let (ended, after) = hold(vec![Some(true); 100], Some(Duration::from_secs(42))).await;
        assert_eq!((ended, after), (Holding::Stopped, Duration::from_secs(42)));
    }

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                Timestamp::from_second(1_000_000 - renewed_secs_ago).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_expired_or_already_ours() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert!(may_hold(&spec(None, 0, 15), "a", now));
        assert!(may_hold(&spec(Some("a"), 0, 15), "a", now));
        assert!(!may_hold(&spec(Some("b"), 5, 15), "a", now));
        assert!(
            !may_hold(&spec(Some("b"), 15, 15), "a", now),
            "expires after, not at, the duration"
        );
        assert!(may_hold(&spec(Some("b"), 16, 15), "a", now));
    }
}

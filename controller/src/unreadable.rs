//! Experiments are watched as untyped objects and read one at a time, so one the controller
//! cannot read (stored before the CRD's schema refused what the controller refuses, or edited
//! under an older CRD) is reported on itself and leaves every other experiment running. A
//! typed watch lists all of them at once: one unreadable object made every list fail, and the
//! controller reconciled nothing.

use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, CustomResourceExt, Resource, ResourceExt};
use serde_json::json;

use crate::reconcile::{Context, FIELD_MANAGER, FINALIZER, ReconcileError, reconcile};
use crate::spec::{API_VERSION, Experiment, KIND};
use crate::status::Phase;

/// The `Experiment` resource, for untyped watches.
pub fn api_resource() -> ApiResource {
    Experiment::api_resource()
}

/// The object as the controller reads it, or why it cannot be, naming the field.
pub fn read(object: &DynamicObject) -> Result<Experiment, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        format!("{path}: {}", error.into_inner())
    })
}

/// Reconciles an object that reads as an `Experiment`; reports one that does not.
pub(crate) async fn reconcile_object(
    object: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    match read(&object) {
        Ok(experiment) => reconcile(Arc::new(experiment), context).await,
        Err(why) => {
            report(&object, &why, &context).await?;
            Ok(Action::await_change())
        }
    }
}

pub(crate) fn error_policy_object(
    object: Arc<DynamicObject>,
    error: &ReconcileError,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(experiment = %object.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(crate::reconcile::WAIT)
}

/// Says on the object why it cannot be read, or lets it go when it is being deleted (the
/// finalizer would otherwise keep it forever).
async fn report(
    object: &DynamicObject,
    why: &str,
    context: &Context,
) -> Result<(), ReconcileError> {
    let namespace = object.namespace().unwrap_or_else(|| "default".into());
    let name = object.name_any();
    let objects: Api<DynamicObject> =
        Api::namespaced_with(context.client.clone(), &namespace, &api_resource());
    tracing::warn!(experiment = %name, %namespace, reason = %why, "an experiment cannot be read");
    if object.metadata.deletion_timestamp.is_some() {
        context.runner.stop(&format!("{namespace}/{name}"));
        let finalizers: Vec<String> = object
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        if finalizers.len() != object.finalizers().len() {
            objects
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "finalizers": finalizers } })),
                )
                .await?;
        }
        return Ok(());
    }
    let condition = json!({
        "type": "SpecValid",
        "status": "False",
        "reason": "Unreadable",
        "message": format!("the controller cannot read this experiment ({why}); delete it and apply it again with the current CRD"),
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let already = object
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c["type"] == "SpecValid"
                    && c["reason"] == "Unreadable"
                    && c["message"] == condition["message"]
            })
        });
    if already {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": {
            "phase": Phase::Failed,
            "observedGeneration": object.metadata.generation,
            "conditions": [condition],
        },
    });
    objects
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    context
        .events
        .warn(
            &object.object_ref(&api_resource()),
            "SpecValid",
            "Unreadable",
            condition["message"].as_str().unwrap_or_default(),
        )
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(connections: serde_json::Value) -> DynamicObject {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/epoll-refcount.yaml"
        ))
        .unwrap();
        let spec = crate::parse_experiment(&text).unwrap().spec;
        let mut value = serde_json::to_value(Experiment::new("seed", spec)).unwrap();
        value["metadata"]["namespace"] = "lab".into();
        value["spec"]["load"]["connections"] = connections;
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_object_reads_as_an_experiment_or_names_the_field_that_does_not() {
        let good = object(json!(64));
        assert_eq!(read(&good).unwrap().spec.load.connections, 64);
        let too_big = read(&object(json!(4_294_967_296u64))).unwrap_err();
        assert!(too_big.starts_with("spec.load.connections: "), "{too_big}");
    }
}

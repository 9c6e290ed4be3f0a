//! The one way the controller writes an Experiment's status: a field manager's typed part
//! (`StatusPart`), applied server-side with force, so each manager owns exactly its fields.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::spec::{API_VERSION, Experiment, KIND};
use crate::status::StatusPart;

pub(crate) async fn apply_status(
    experiments: &Api<Experiment>,
    name: &str,
    manager: &str,
    part: &StatusPart,
) -> Result<(), kube::Error> {
    let patch = json!({ "apiVersion": API_VERSION, "kind": KIND, "status": part });
    experiments
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

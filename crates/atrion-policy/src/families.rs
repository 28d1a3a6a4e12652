//! The policy layer's keys in a namespace, each with the check of its values, for a
//! restore ([`atrion_state::KeyFamilies`]): the format of each is owned here.

use std::sync::Arc;

use atrion_state::{KeyFamily, ValueCheck};

use crate::keys::PolicyKeys;
use serde::de::DeserializeOwned;

use crate::reconcile::{AuditEntry, HistoryEvent, Report};
use crate::validate::Validator;

fn json<T: DeserializeOwned>() -> ValueCheck {
    Arc::new(|v: &[u8]| serde_json::from_slice::<T>(v).map(drop).map_err(|e| e.to_string()))
}

/// The policy layer's families under `keys`' namespace: desired state (it decodes, and
/// passes `validator` as a whole, as every change to it must), the nodes' reports, the
/// report index, the history and the audit trail (each entry decodes as its type).
pub fn key_families(keys: &PolicyKeys, validator: Validator) -> Vec<KeyFamily> {
    let desired_key = keys.policy_desired();
    let shown = desired_key.clone();
    let desired: ValueCheck = Arc::new(move |v: &[u8]| {
        let desired = crate::desired::decode(&shown, v).map_err(|e| e.to_string())?;
        validator.check_desired(&desired).map_err(|e| e.to_string())
    });
    vec![
        KeyFamily::exact("desired policies", desired_key, desired),
        KeyFamily::exact("the policy report index", keys.policy_index(), json::<Vec<String>>()),
        KeyFamily::under("node policy reports", keys.policy_reports_prefix(), json::<Report>()),
        KeyFamily::under("policy history", keys.policy_history_prefix(), json::<HistoryEvent>()),
        KeyFamily::under("audit trail", keys.audit_prefix(), json::<AuditEntry>()),
    ]
}

#[cfg(test)]
mod tests {
    use atrion_core::PhysicsConfig;
    use atrion_state::{BackupLine, KeyFamilies};

    use super::*;
    use crate::validate::Limits;

    fn check(families: &KeyFamilies, key: &str, value: &[u8]) -> Result<(), String> {
        families.check(&BackupLine { key: key.into(), value: value.to_vec().into(), ttl: None })
    }

    #[test]
    fn each_key_is_checked_by_its_owner_and_foreign_keys_are_refused() {
        let keys = PolicyKeys::new("ns", "n1");
        let v = Validator::new(PhysicsConfig::default(), Limits::default());
        let families = KeyFamilies::new()
            .with(atrion_sync::cluster_families(&atrion_sync::ClusterKeys::new("ns", "n1")))
            .with(key_families(&keys, v));
        let desired = serde_json::to_vec(&crate::Desired::default()).unwrap();
        assert_eq!(check(&families, "ns/policy/desired", &desired), Ok(()));
        assert!(check(&families, "ns/policy/desired", b"abcdef").unwrap_err().contains("desired policies"));
        assert_eq!(check(&families, "ns/policy/index", br#"["n1"]"#), Ok(()));
        assert!(check(&families, "ns/policy/index", b"{}").is_err());
        assert!(check(&families, "ns/policy/node/n1", b"[]").unwrap_err().contains("node policy reports"));
        assert!(check(&families, "ns/audit/0001-n1-00000001", b"null").unwrap_err().contains("audit trail"));
        assert!(check(&families, "ns/policy/history/x", b"{}").unwrap_err().contains("policy history"));
        assert!(check(&families, "ns/route/GET /a", b"junk").unwrap_err().contains("route shares"));
        assert!(check(&families, "ns/node/n2", b"short").unwrap_err().contains("heartbeat"));
        assert!(check(&families, "ns/node/n2", &[0; 8]).is_ok());
        for foreign in ["evil/key", "ns/policy/other", "ns/route/", "other/policy/desired", "ns/unknown/x"] {
            assert!(check(&families, foreign, b"").unwrap_err().contains("no family"), "{foreign}");
        }
    }
}

//! What the configuration asks of the model: the key rules, and what an empty
//! prefix means for the services a server gave before.

use crate::config::{Config, EmptyPrefixPolicy};
use crate::kv::Rules;
use crate::model::ServerModel;

/// The key rules every server's model applies.
pub fn rules(config: &Config) -> Rules {
    Rules {
        prefix: config.prefix.clone(),
        skip_keys: config.skip_keys.clone(),
        default_weight: config.weight,
    }
}

/// What an empty prefix did to a server's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyOutcome {
    /// Nothing was there, or nothing changed.
    Unchanged,
    /// `on_empty_prefix = clear`: the services were removed.
    Cleared,
    /// `on_empty_prefix = keep`: this many services are still served.
    Kept(usize),
}

/// Applies `policy` to `model` after Consul said the prefix is empty.
pub fn on_empty_prefix(policy: EmptyPrefixPolicy, model: &mut ServerModel) -> EmptyOutcome {
    match policy {
        EmptyPrefixPolicy::Clear if model.clear() => EmptyOutcome::Cleared,
        EmptyPrefixPolicy::Clear => EmptyOutcome::Unchanged,
        EmptyPrefixPolicy::Keep => match model.service_count() {
            0 => EmptyOutcome::Unchanged,
            n => EmptyOutcome::Kept(n),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Field, RawEntry};
    use base64::Engine as _;
    use std::borrow::Cow;

    fn model_with_one_service() -> ServerModel {
        let mut m = ServerModel::new(
            0,
            "http://h:1",
            Rules {
                prefix: "p".into(),
                skip_keys: vec![],
                default_weight: 1,
            },
        );
        let entry = RawEntry {
            key: Field::Ok(Cow::Borrowed("p/web/10.0.0.1:80")),
            value: Field::Ok(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode("{}"),
            )),
            modify_index: Field::Ok(1),
        };
        m.apply(&[entry], 1).unwrap();
        m
    }

    #[test]
    fn keep_reports_what_is_kept_and_clear_removes_once() {
        let mut m = model_with_one_service();
        assert_eq!(
            on_empty_prefix(EmptyPrefixPolicy::Keep, &mut m),
            EmptyOutcome::Kept(1)
        );
        assert_eq!(
            on_empty_prefix(EmptyPrefixPolicy::Clear, &mut m),
            EmptyOutcome::Cleared
        );
        assert_eq!(
            on_empty_prefix(EmptyPrefixPolicy::Clear, &mut m),
            EmptyOutcome::Unchanged
        );
        assert_eq!(
            on_empty_prefix(EmptyPrefixPolicy::Keep, &mut m),
            EmptyOutcome::Unchanged
        );
    }
}

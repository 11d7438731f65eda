//! The column transforms: `project` (keep, drop, rename), `mask` (keyed hash or redaction) and
//! `route` (another table name, other key columns). Stateless: each event on its own.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::{ChangeEvent, Encoding, Row, TableRef, Value};
use crate::settings::Secret;

#[derive(Debug, Clone)]
pub struct Project {
    /// Keep only these columns (after renaming); `None`: keep all but `drop`.
    pub keep: Option<Vec<String>>,
    pub drop: Vec<String>,
    /// `(from, to)`.
    pub rename: Vec<(String, String)>,
}

impl Project {
    fn row(&self, row: &mut Row) {
        for (name, _) in row.0.iter_mut() {
            if let Some((_, to)) = self.rename.iter().find(|(from, _)| **from == **name) {
                *name = Arc::from(to.as_str());
            }
        }
        row.0.retain(|(name, _)| {
            !self.drop.iter().any(|d| **d == **name)
                && self.keep.as_ref().is_none_or(|k| k.iter().any(|c| **c == **name))
        });
    }

    /// The row images lose and rename columns; the key keeps its columns (renamed), so the row
    /// still has the same identity in the sinks.
    pub fn apply(&self, ev: &mut ChangeEvent) {
        for row in [ev.before.as_mut(), ev.after.as_mut()].into_iter().flatten() {
            self.row(row);
        }
        for (name, _) in ev.key.0.iter_mut() {
            if let Some((_, to)) = self.rename.iter().find(|(from, _)| **from == **name) {
                *name = Arc::from(to.as_str());
            }
        }
    }

    /// The columns after this transform, given those before it.
    pub fn columns(&self, columns: &[String]) -> Vec<String> {
        let renamed: Vec<String> = columns
            .iter()
            .map(|c| self.rename.iter().find(|(from, _)| from == c).map_or_else(|| c.clone(), |(_, to)| to.clone()))
            .collect();
        renamed
            .into_iter()
            .filter(|c| !self.drop.contains(c) && self.keep.as_ref().is_none_or(|k| k.contains(c)))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub enum MaskMethod {
    /// HMAC-SHA256 of the value's text under a secret key, as 64 hex characters: the same input
    /// always gives the same output, so masked columns still join and group.
    Hash(Secret),
    /// The value replaced by this text.
    Redact(String),
}

#[derive(Debug, Clone)]
pub struct Mask {
    pub columns: Vec<String>,
    pub method: MaskMethod,
}

impl Mask {
    fn value(&self, v: &mut Value) {
        if v.is_null() {
            return;
        }
        *v = match &self.method {
            MaskMethod::Redact(marker) => Value::Text(marker.clone()),
            MaskMethod::Hash(key) => {
                let mut text = String::new();
                Encoding::default().write_text(v, &mut text);
                let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key");
                mac.update(text.as_bytes());
                let digest = mac.finalize().into_bytes();
                let mut hex = String::with_capacity(64);
                for b in digest {
                    hex.push_str(&format!("{b:02x}"));
                }
                Value::Text(hex)
            }
        };
    }

    /// Masks the columns in both row images and, when a key column is masked, in the key (a
    /// keyed hash keeps keys distinct; a redaction marker would not, so `check_table` refuses it).
    pub fn apply(&self, ev: &mut ChangeEvent) {
        for row in [ev.before.as_mut(), ev.after.as_mut(), Some(&mut ev.key)].into_iter().flatten() {
            for (name, v) in row.0.iter_mut() {
                if self.columns.iter().any(|c| **c == **name) {
                    self.value(v);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The new bare table name; `{table}` stands for the old one.
    pub table: Option<String>,
    /// The new key columns, taken from the row.
    pub key: Option<Vec<String>>,
}

impl Route {
    pub fn apply(&self, ev: &mut ChangeEvent) -> Result<(), String> {
        if let Some(t) = &self.table {
            let name = t.replace("{table}", &ev.table.name);
            ev.table =
                Arc::new(TableRef { db: ev.table.db.clone(), schema: ev.table.schema.clone(), name: name.into() });
        }
        if let Some(cols) = &self.key {
            if ev.op == crate::event::Op::Truncate {
                return Ok(());
            }
            let row = ev.after.as_ref().or(ev.before.as_ref()).ok_or("the event has no row to take the key from")?;
            let mut key = Vec::with_capacity(cols.len());
            for c in cols {
                let v = row.get(c).ok_or_else(|| {
                    format!(
                        "key column `{c}` is not in the row of {} (a partial row lacks unchanged TOASTed columns)",
                        ev.table
                    )
                })?;
                key.push((Arc::from(c.as_str()), v.clone()));
            }
            ev.key = Row(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Op, SnapshotFlag, SourceMeta, Version};

    fn ev() -> ChangeEvent {
        let row = Row(vec![
            (Arc::from("id"), Value::Int(7)),
            (Arc::from("email"), Value::Text("a@b.c".into())),
            (Arc::from("status"), Value::Text("paid".into())),
            (Arc::from("note"), Value::Null),
        ]);
        ChangeEvent {
            op: Op::Update,
            table: Arc::new(TableRef { db: "shop".into(), schema: "public".into(), name: "orders".into() }),
            key: Row(vec![(Arc::from("id"), Value::Int(7))]),
            before: Some(row.clone()),
            after: Some(row),
            partial: false,
            version: Version::new(1, 1),
            commit_us: 0,
            snapshot: SnapshotFlag::No,
            source: SourceMeta::Postgres { lsn: 1, last_commit_lsn: None, tx_id: None },
        }
    }

    fn names(r: &Row) -> Vec<&str> {
        r.iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn project_keeps_drops_and_renames() {
        let p = Project {
            keep: Some(vec!["order_id".into(), "state".into()]),
            drop: vec![],
            rename: vec![("id".into(), "order_id".into()), ("status".into(), "state".into())],
        };
        let mut e = ev();
        p.apply(&mut e);
        assert_eq!(names(e.after.as_ref().unwrap()), ["order_id", "state"]);
        assert_eq!(names(e.before.as_ref().unwrap()), ["order_id", "state"]);
        assert_eq!(names(&e.key), ["order_id"]);
        let cols = ["id", "email", "status", "note"].map(String::from);
        assert_eq!(p.columns(&cols), ["order_id", "state"]);
        let d = Project { keep: None, drop: vec!["email".into()], rename: vec![] };
        let mut e = ev();
        d.apply(&mut e);
        assert_eq!(names(e.after.as_ref().unwrap()), ["id", "status", "note"]);
    }

    #[test]
    fn mask_hashes_stably_and_redacts() {
        let m = Mask { columns: vec!["email".into(), "id".into()], method: MaskMethod::Hash(Secret::new("k1")) };
        let (mut a, mut b) = (ev(), ev());
        m.apply(&mut a);
        m.apply(&mut b);
        let masked = a.after.as_ref().unwrap().get("email").unwrap().clone();
        assert_eq!(Some(&masked), b.after.as_ref().unwrap().get("email"));
        assert!(matches!(&masked, Value::Text(h) if h.len() == 64 && h != "a@b.c"));
        assert_eq!(a.key.get("id"), a.after.as_ref().unwrap().get("id"));
        let other = Mask { columns: vec!["email".into()], method: MaskMethod::Hash(Secret::new("k2")) };
        let mut c = ev();
        other.apply(&mut c);
        assert_ne!(c.after.as_ref().unwrap().get("email"), Some(&masked), "the key decides the hash");
        let r = Mask { columns: vec!["email".into(), "note".into()], method: MaskMethod::Redact("[redacted]".into()) };
        let mut d = ev();
        r.apply(&mut d);
        assert_eq!(d.after.as_ref().unwrap().get("email"), Some(&Value::Text("[redacted]".into())));
        assert_eq!(d.after.as_ref().unwrap().get("note"), Some(&Value::Null), "NULL stays NULL");
    }

    #[test]
    fn route_renames_the_table_and_rekeys() {
        let r = Route { table: Some("{table}_by_email".into()), key: Some(vec!["email".into()]) };
        let mut e = ev();
        r.apply(&mut e).unwrap();
        assert_eq!(&*e.table.name, "orders_by_email");
        assert_eq!(e.key, Row(vec![(Arc::from("email"), Value::Text("a@b.c".into()))]));
        let bad = Route { table: None, key: Some(vec!["nope".into()]) };
        assert!(bad.apply(&mut ev()).unwrap_err().contains("`nope`"));
    }
}

//! Decoder for the pgoutput logical replication protocol (version 1), from the raw `XLogData`
//! payloads `pgwire-replication` hands over.
//!
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>

use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pgoutput: {0}")]
pub struct DecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// One column of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send (`'u'`).
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

pub type Tuple = Vec<Datum>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// Which old tuple an update or delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: the replica identity key columns only (others are null).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin { final_lsn: u64, commit_time_us: i64, xid: u32 },
    Commit { flags: u8, commit_lsn: u64, end_lsn: u64, commit_time_us: i64 },
    Origin { commit_lsn: u64, name: String },
    Relation(Relation),
    Type { oid: u32, namespace: String, name: String },
    Insert { relation: u32, new: Tuple },
    Update { relation: u32, old: Option<(OldKind, Tuple)>, new: Tuple },
    Delete { relation: u32, old: (OldKind, Tuple) },
    Truncate { options: u8, relations: Vec<u32> },
    Message { transactional: bool, lsn: u64, prefix: String, content: Bytes },
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        if self.buf.len() - self.pos < n {
            return err(format!("truncated message reading {what}"));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        let v = u32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        Ok(v)
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        let v = u64::from_be_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        Ok(v)
    }
    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let Some(len) = self.buf[self.pos..].iter().position(|&b| b == 0) else {
            return err(format!("unterminated string reading {what}"));
        };
        let s = String::from_utf8_lossy(&self.buf[self.pos..self.pos + len]).into_owned();
        self.pos += len + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.u16("column count")? as usize;
        let mut cols = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            cols.push(match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32("value length")? as usize;
                    Datum::Text(self.bytes(len, "text value")?)
                }
                b'b' => {
                    let len = self.u32("value length")? as usize;
                    Datum::Binary(self.bytes(len, "binary value")?)
                }
                other => return err(format!("unknown tuple column kind {:?}", other as char)),
            });
        }
        Ok(cols)
    }
}

/// Decode one pgoutput message.
pub fn decode(buf: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let tag = r.u8("message tag")?;
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("final lsn")?,
            commit_time_us: r.u64("commit time")? as i64,
            xid: r.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit lsn")?,
            end_lsn: r.u64("end lsn")?,
            commit_time_us: r.u64("commit time")? as i64,
        },
        b'O' => Message::Origin { commit_lsn: r.u64("origin lsn")?, name: r.cstr("origin name")? },
        b'R' => {
            let oid = r.u32("relation oid")?;
            let namespace = r.cstr("namespace")?;
            let name = r.cstr("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let n = r.u16("column count")? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.cstr("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.u32("type modifier")? as i32,
                });
            }
            Message::Relation(Relation { oid, namespace, name, replica_identity, columns })
        }
        b'Y' => Message::Type { oid: r.u32("type oid")?, namespace: r.cstr("namespace")?, name: r.cstr("type name")? },
        b'I' => {
            let relation = r.u32("relation oid")?;
            match r.u8("tuple marker")? {
                b'N' => Message::Insert { relation, new: r.tuple()? },
                other => return err(format!("insert: expected N, found {:?}", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32("relation oid")?;
            let mut old = None;
            let mut marker = r.u8("tuple marker")?;
            if marker == b'K' || marker == b'O' {
                let kind = if marker == b'K' { OldKind::Key } else { OldKind::Full };
                old = Some((kind, r.tuple()?));
                marker = r.u8("tuple marker")?;
            }
            if marker != b'N' {
                return err(format!("update: expected N, found {:?}", marker as char));
            }
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32("relation oid")?;
            let kind = match r.u8("tuple marker")? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return err(format!("delete: expected K or O, found {:?}", other as char)),
            };
            Message::Delete { relation, old: (kind, r.tuple()?) }
        }
        b'T' => {
            let n = r.u32("relation count")? as usize;
            let options = r.u8("truncate options")?;
            let mut relations = Vec::with_capacity(n.min(r.buf.len() / 4));
            for _ in 0..n {
                relations.push(r.u32("relation oid")?);
            }
            Message::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message lsn")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.u32("message length")? as usize;
            Message::Message { transactional: flags & 1 == 1, lsn, prefix, content: r.bytes(len, "message content")? }
        }
        other => return err(format!("unknown message tag {:?}", other as char)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }

    fn text_col(v: &mut Vec<u8>, s: &str) {
        v.push(b't');
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn relation_and_update_with_unchanged_toast() {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16385u32.to_be_bytes());
        cstr(&mut m, "public");
        cstr(&mut m, "docs");
        m.push(b'd');
        m.extend_from_slice(&2u16.to_be_bytes());
        m.push(1);
        cstr(&mut m, "id");
        m.extend_from_slice(&23u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        cstr(&mut m, "body");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(rel) = decode(Bytes::from(m)).unwrap() else { panic!() };
        assert_eq!(rel.name, "docs");
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(rel.columns[1].type_modifier, -1);

        let mut u = vec![b'U'];
        u.extend_from_slice(&16385u32.to_be_bytes());
        u.push(b'N');
        u.extend_from_slice(&2u16.to_be_bytes());
        text_col(&mut u, "7");
        u.push(b'u');
        assert_eq!(
            decode(Bytes::from(u)).unwrap(),
            Message::Update {
                relation: 16385,
                old: None,
                new: vec![Datum::Text(Bytes::from_static(b"7")), Datum::Unchanged]
            }
        );
    }

    #[test]
    fn delete_truncate_message_and_errors() {
        let mut d = vec![b'D'];
        d.extend_from_slice(&1u32.to_be_bytes());
        d.push(b'K');
        d.extend_from_slice(&2u16.to_be_bytes());
        text_col(&mut d, "1");
        d.push(b'n');
        assert_eq!(
            decode(Bytes::from(d)).unwrap(),
            Message::Delete {
                relation: 1,
                old: (OldKind::Key, vec![Datum::Text(Bytes::from_static(b"1")), Datum::Null])
            }
        );

        let mut t = vec![b'T'];
        t.extend_from_slice(&2u32.to_be_bytes());
        t.push(1);
        t.extend_from_slice(&10u32.to_be_bytes());
        t.extend_from_slice(&11u32.to_be_bytes());
        assert_eq!(decode(Bytes::from(t)).unwrap(), Message::Truncate { options: 1, relations: vec![10, 11] });

        let mut msg = vec![b'M', 0];
        msg.extend_from_slice(&0x10u64.to_be_bytes());
        cstr(&mut msg, "tidemark_heartbeat");
        msg.extend_from_slice(&2u32.to_be_bytes());
        msg.extend_from_slice(b"42");
        let Message::Message { transactional, lsn, prefix, content } = decode(Bytes::from(msg)).unwrap() else {
            panic!()
        };
        assert!(!transactional);
        assert_eq!((lsn, prefix.as_str(), &content[..]), (0x10, "tidemark_heartbeat", &b"42"[..]));

        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x20u64.to_be_bytes());
        begin.extend_from_slice(&5u64.to_be_bytes());
        begin.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(decode(Bytes::from(begin)).unwrap(), Message::Begin { final_lsn: 0x20, commit_time_us: 5, xid: 9 });

        assert!(decode(Bytes::from_static(b"I\0\0")).is_err());
        assert!(decode(Bytes::from_static(b"Z")).is_err());
    }
}

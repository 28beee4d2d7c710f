//! Serde helpers the generated messages use with the `json` feature (see
//! `build.rs`): the proto3 JSON shapes of bytes (hex here, for people) and
//! enums (value names).

use serde::{Serialize, Serializer};

/// Bytes as lowercase hex.
pub fn hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut out = String::with_capacity(v.len() * 2);
    for b in v {
        out.push_str(&format!("{b:02x}"));
    }
    s.serialize_str(&out)
}

/// A list of byte strings as lowercase hex.
pub fn hex_list<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    struct Hex<'a>(&'a [u8]);
    impl Serialize for Hex<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            hex(self.0, s)
        }
    }
    s.collect_seq(v.iter().map(|b| Hex(b)))
}

/// An enum field by its value name; a number this build does not know stays a number.
pub fn enum_name<E, S>(v: &i32, s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Serialize,
    S: Serializer,
{
    match E::try_from(*v) {
        Ok(e) => e.serialize(s),
        Err(_) => s.serialize_i32(*v),
    }
}

/// A repeated enum field by value names.
pub fn enum_names<E, S>(v: &[i32], s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Serialize,
    S: Serializer,
{
    struct One<E>(i32, std::marker::PhantomData<E>);
    impl<E: TryFrom<i32> + Serialize> Serialize for One<E> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            enum_name::<E, S>(&self.0, s)
        }
    }
    s.collect_seq(v.iter().map(|x| One::<E>(*x, std::marker::PhantomData)))
}

#[cfg(test)]
mod tests {
    use crate::v1 as pb;

    #[test]
    fn messages_serialize_in_the_proto3_json_shape_with_proto_field_names() {
        let e = pb::ChainEvent {
            height: 7,
            kind: pb::EventKind::Mint as i32,
            event: Some(pb::chain_event::Event::Mint(pb::MintEvent {
                account: "fprt1x".into(),
                amount: 5,
                outpoint: "ab:0".into(),
            })),
            ..Default::default()
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "EVENT_KIND_MINT");
        assert_eq!(v["event"]["mint"]["outpoint"], "ab:0");
        assert_eq!(v["height"], 7);
        let b = pb::BlockView {
            raw: vec![0xde, 0xad],
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&b).unwrap()["raw"], "dead");
        let r = pb::SubscribeEventsRequest {
            kinds: vec![1, 99],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap()["kinds"],
            serde_json::json!(["EVENT_KIND_TRANSFER", 99])
        );
    }
}

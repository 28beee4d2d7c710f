//! Compiles the .proto files with protox (pure Rust; no system `protoc`) and
//! generates prost messages, plus tonic clients/servers with the `grpc`
//! feature. The encoded file
//! descriptor set is written to OUT_DIR for gRPC server reflection.
//!
//! With the `json` feature every message and enum also derives
//! `serde::Serialize` in the shape of the proto3 JSON mapping with the
//! original (snake_case) field names: enums as their value names, bytes as
//! lowercase hex; a oneof is an object holding its set field
//! (`"event": {"mint": {…}}`). The
//! attributes are derived from the descriptors, so a new field can never be
//! left out of the JSON API.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto};
use std::path::PathBuf;

/// `#[cfg_attr(feature = "json", …)]`: the attribute only with the feature.
fn json(attr: &str) -> String {
    format!("#[cfg_attr(feature = \"json\", {attr})]")
}

/// Rust path of a top-level proto type `.fedpeg.v1.Name`.
fn rust_type(proto: &str) -> Result<String, String> {
    match proto.strip_prefix(".fedpeg.v1.") {
        Some(name) if !name.contains('.') => Ok(format!("crate::v1::{name}")),
        _ => Err(format!(
            "json: nested or foreign enum type {proto} is not supported"
        )),
    }
}

fn enum_attributes(
    mut b: tonic_prost_build::Builder,
    path: &str,
    e: &EnumDescriptorProto,
) -> tonic_prost_build::Builder {
    b = b.enum_attribute(path, json("derive(serde::Serialize)"));
    for v in &e.value {
        b = b.field_attribute(
            format!("{path}.{}", v.name()),
            json(&format!("serde(rename = \"{}\")", v.name())),
        );
    }
    b
}

fn message_attributes(
    mut b: tonic_prost_build::Builder,
    path: &str,
    m: &DescriptorProto,
) -> Result<tonic_prost_build::Builder, String> {
    b = b.message_attribute(path, json("derive(serde::Serialize)"));
    for (i, oneof) in m.oneof_decl.iter().enumerate() {
        let real = m
            .field
            .iter()
            .any(|f| f.oneof_index == Some(i as i32) && !f.proto3_optional());
        if real {
            let p = format!("{path}.{}", oneof.name());
            // Not flattened: prost matches field attributes by path
            // prefix, so one on the oneof field would reach its variants too.
            b = b
                .enum_attribute(&p, json("derive(serde::Serialize)"))
                .enum_attribute(&p, json("serde(rename_all = \"snake_case\")"));
        }
    }
    for f in &m.field {
        let in_oneof = f.oneof_index.is_some() && !f.proto3_optional();
        let field_path = match (in_oneof, f.oneof_index) {
            (true, Some(i)) => format!("{path}.{}.{}", m.oneof_decl[i as usize].name(), f.name()),
            _ => format!("{path}.{}", f.name()),
        };
        let repeated = f.label() == Label::Repeated;
        let optional = f.proto3_optional();
        let with = match (f.r#type(), repeated, optional) {
            (Type::Bytes, false, false) => Some("crate::json::hex".to_string()),
            (Type::Bytes, true, _) => Some("crate::json::hex_list".to_string()),
            (Type::Enum, false, false) => Some(format!(
                "crate::json::enum_name::<{}, _>",
                rust_type(f.type_name())?
            )),
            (Type::Enum, true, _) => Some(format!(
                "crate::json::enum_names::<{}, _>",
                rust_type(f.type_name())?
            )),
            (Type::Bytes | Type::Enum, _, true) => {
                return Err(format!("json: optional bytes/enum field {field_path}"))
            }
            _ => None,
        };
        if let Some(with) = with {
            b = b.field_attribute(
                &field_path,
                json(&format!("serde(serialize_with = \"{with}\")")),
            );
        }
    }
    for nested in &m.nested_type {
        if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        b = message_attributes(b, &format!("{path}.{}", nested.name()), nested)?;
    }
    for e in &m.enum_type {
        b = enum_attributes(b, &format!("{path}.{}", e.name()), e);
    }
    Ok(b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["fedpeg/v1/types.proto", "fedpeg/v1/api.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fedpeg_descriptor.bin"), fds.encode_to_vec())?;
    // Service code (tonic clients and servers) only with the `grpc` feature:
    // the ledger crate uses the messages alone and must not link tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let mut b = tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc);
    for file in &fds.file {
        let package = format!(".{}", file.package());
        for m in &file.message_type {
            b = message_attributes(b, &format!("{package}.{}", m.name()), m)?;
        }
        for e in &file.enum_type {
            b = enum_attributes(b, &format!("{package}.{}", e.name()), e);
        }
    }
    b.compile_fds(fds)?;
    Ok(())
}

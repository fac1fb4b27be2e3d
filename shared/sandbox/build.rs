// A build script that cannot read the schema must stop the build with a clear message.
#![allow(clippy::expect_used, clippy::panic)]
//! Extracts the part of Microsoft Graph's v1.0 CSDL the sandbox tenant checks request bodies and
//! `$select` against, and writes it as compact JSON to `$OUT_DIR/graph_schema.json`.
//!
//! One streaming pass over `schema/v1.0-Prod.csdl` (quick-xml, no DOM) records every entity,
//! complex and enum type; then the closure of the root entity types below (base types, and the
//! complex and enum types their properties use, transitively) is written out. The output is
//! checked here, so `src/schema.rs` can trust its shape.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use serde_json::{Value, json};

const CSDL: &str = "schema/v1.0-Prod.csdl";

/// The entity types the sandbox serves; their base types are added automatically.
const ROOTS: &[&str] = &[
    "microsoft.graph.user",
    "microsoft.graph.group",
    "microsoft.graph.organization",
    "microsoft.graph.domain",
    "microsoft.graph.subscribedSku",
    "microsoft.graph.licenseDetails",
    "microsoft.graph.directoryObject",
];

struct Prop {
    name: String,
    /// Raw `Type` attribute, aliases unresolved (`Collection(graph.assignedLicense)`).
    ty: String,
    nullable: bool,
}

struct Nav {
    name: String,
    ty: String,
}

struct Structured {
    base: Option<String>,
    open: bool,
    props: Vec<Prop>,
    navs: Vec<Nav>,
}

struct Enum {
    flags: bool,
    members: Vec<String>,
}

enum Current {
    None,
    Structured(String),
    Enum(String),
}

#[derive(Default)]
struct Model {
    /// Namespace and alias → namespace.
    namespaces: HashMap<String, String>,
    entities: HashMap<String, Structured>,
    complexes: HashMap<String, Structured>,
    enums: HashMap<String, Enum>,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e
        .try_get_attribute(name)
        .expect("malformed attribute in the CSDL")?;
    Some(
        a.normalized_value(XmlVersion::Explicit1_0)
            .expect("undecodable attribute value in the CSDL")
            .into_owned(),
    )
}

/// Where the parser is in the CSDL.
struct ParseState {
    namespace: String,
    current: Current,
    /// Which map `Current::Structured` points into.
    current_is_entity: bool,
}

fn parse(text: &str) -> Model {
    let mut model = Model::default();
    let mut reader = Reader::from_str(text);
    let mut state = ParseState {
        namespace: String::new(),
        current: Current::None,
        current_is_entity: false,
    };
    loop {
        let event = reader
            .read_event()
            .expect("the CSDL is not well-formed XML");
        let (e, is_empty) = match &event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) => {
                match e.local_name().as_ref() {
                    "EntityType" | "ComplexType" | "EnumType" => state.current = Current::None,
                    _ => {}
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        element(&mut model, &mut state, e, is_empty);
    }
    model
}

/// One start (or empty) element: a schema, a type, a property or an enum member.
fn element(model: &mut Model, state: &mut ParseState, e: &BytesStart<'_>, is_empty: bool) {
    match e.local_name().as_ref() {
        "Schema" => {
            state.namespace = attr(e, "Namespace").expect("Schema without Namespace");
            model
                .namespaces
                .insert(state.namespace.clone(), state.namespace.clone());
            if let Some(alias) = attr(e, "Alias") {
                model.namespaces.insert(alias, state.namespace.clone());
            }
        }
        kind @ ("EntityType" | "ComplexType") => {
            let name = format!(
                "{}.{}",
                state.namespace,
                attr(e, "Name").expect("type without Name")
            );
            let def = Structured {
                base: attr(e, "BaseType"),
                open: attr(e, "OpenType").as_deref() == Some("true"),
                props: Vec::new(),
                navs: Vec::new(),
            };
            state.current_is_entity = kind == "EntityType";
            let map = if state.current_is_entity {
                &mut model.entities
            } else {
                &mut model.complexes
            };
            map.insert(name.clone(), def);
            state.current = if is_empty {
                Current::None
            } else {
                Current::Structured(name)
            };
        }
        "EnumType" => {
            let name = format!(
                "{}.{}",
                state.namespace,
                attr(e, "Name").expect("enum without Name")
            );
            let def = Enum {
                flags: attr(e, "IsFlags").as_deref() == Some("true"),
                members: Vec::new(),
            };
            model.enums.insert(name.clone(), def);
            state.current = if is_empty {
                Current::None
            } else {
                Current::Enum(name)
            };
        }
        "Property" | "NavigationProperty" => {
            let Current::Structured(owner) = &state.current else {
                return;
            };
            let map = if state.current_is_entity {
                &mut model.entities
            } else {
                &mut model.complexes
            };
            let def = map.get_mut(owner).expect("owner recorded at its start tag");
            let name = attr(e, "Name").expect("property without Name");
            let ty = attr(e, "Type").expect("property without Type");
            if e.local_name().as_ref() == "Property" {
                let nullable = attr(e, "Nullable").as_deref() != Some("false");
                def.props.push(Prop { name, ty, nullable });
            } else {
                def.navs.push(Nav { name, ty });
            }
        }
        "Member" => {
            if let Current::Enum(owner) = &state.current {
                let name = attr(e, "Name").expect("enum member without Name");
                if let Some(def) = model.enums.get_mut(owner) {
                    def.members.push(name);
                }
            }
        }
        _ => {}
    }
}

/// `Collection(graph.x)` → (`microsoft.graph.x`, true); `Edm.String` → (`Edm.String`, false).
fn resolve(model: &Model, raw: &str) -> (String, bool) {
    let (inner, collection) = match raw
        .strip_prefix("Collection(")
        .and_then(|s| s.strip_suffix(')'))
    {
        Some(inner) => (inner, true),
        None => (raw, false),
    };
    if inner.starts_with("Edm.") {
        return (inner.to_owned(), collection);
    }
    let (prefix, local) = inner
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("unqualified type name '{inner}' in the CSDL"));
    let namespace = model
        .namespaces
        .get(prefix)
        .unwrap_or_else(|| panic!("unknown namespace or alias '{prefix}' in type '{raw}'"));
    (format!("{namespace}.{local}"), collection)
}

fn main() {
    println!("cargo:rerun-if-changed={CSDL}");
    println!("cargo:rerun-if-changed=build.rs");

    let text = std::fs::read_to_string(CSDL).expect("cannot read schema/v1.0-Prod.csdl");
    let model = parse(&text);
    let used = used_types(&model);
    let out = render(&model, &used);
    check(&out);

    let text = serde_json::to_string(&out).expect("schema JSON serialises");
    let path = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("graph_schema.json");
    std::fs::write(&path, text).expect("cannot write graph_schema.json");
}

/// The types the sandbox needs: [`ROOTS`] and their base chains, and every complex or enum type
/// their properties use.
struct UsedTypes {
    entities: BTreeSet<String>,
    complexes: BTreeSet<String>,
    enums: BTreeSet<String>,
}

fn used_types(model: &Model) -> UsedTypes {
    // Closure: entity base chains, then every complex/enum type a property uses.
    let mut entities = BTreeSet::new();
    let mut pending: Vec<String> = ROOTS.iter().map(|s| (*s).to_owned()).collect();
    while let Some(name) = pending.pop() {
        let def = model
            .entities
            .get(&name)
            .unwrap_or_else(|| panic!("entity type {name} is not in the CSDL"));
        if entities.insert(name)
            && let Some(base) = &def.base
        {
            pending.push(resolve(model, base).0);
        }
    }

    let mut complexes = BTreeSet::new();
    let mut enums = BTreeSet::new();
    let mut types: Vec<String> = Vec::new();
    let queue_props = |props: &[Prop], types: &mut Vec<String>| {
        for p in props {
            let (ty, _) = resolve(model, &p.ty);
            if !ty.starts_with("Edm.") {
                types.push(ty);
            }
        }
    };
    for name in &entities {
        queue_props(&model.entities[name].props, &mut types);
    }
    while let Some(ty) = types.pop() {
        if let Some(def) = model.complexes.get(&ty) {
            if complexes.insert(ty) {
                queue_props(&def.props, &mut types);
                if let Some(base) = &def.base {
                    types.push(resolve(model, base).0);
                }
            }
        } else if model.enums.contains_key(&ty) {
            enums.insert(ty);
        } else {
            panic!("property type {ty} is neither a complex nor an enum type in the CSDL");
        }
    }

    UsedTypes {
        entities,
        complexes,
        enums,
    }
}

/// The schema JSON that `src/schema.rs` reads.
fn render(model: &Model, used: &UsedTypes) -> Value {
    let props_json = |props: &[Prop]| -> Vec<Value> {
        props
            .iter()
            .map(|p| {
                let (ty, collection) = resolve(model, &p.ty);
                json!([p.name, ty, collection, p.nullable])
            })
            .collect()
    };
    let structured_json = |def: &Structured, with_navs: bool| -> Value {
        let mut v = json!({
            "base": def.base.as_ref().map(|b| resolve(model, b).0),
            "open": def.open,
            "props": props_json(&def.props),
        });
        if with_navs {
            let navs: Vec<Value> = def
                .navs
                .iter()
                .map(|n| {
                    let (ty, collection) = resolve(model, &n.ty);
                    json!([n.name, ty, collection])
                })
                .collect();
            v["navs"] = Value::Array(navs);
        }
        v
    };

    let out_entities: BTreeMap<&String, Value> = used
        .entities
        .iter()
        .map(|n| (n, structured_json(&model.entities[n], true)))
        .collect();
    let out_complexes: BTreeMap<&String, Value> = used
        .complexes
        .iter()
        .map(|n| (n, structured_json(&model.complexes[n], false)))
        .collect();
    let out_enums: BTreeMap<&String, Value> = used
        .enums
        .iter()
        .map(|n| {
            let e = &model.enums[n];
            (n, json!({"flags": e.flags, "members": e.members}))
        })
        .collect();

    json!({
        "source": "microsoftgraph/msgraph-metadata schemas/v1.0-Prod.csdl @ f54f11b60956ea7b185ca0447b2b80805836ec7b",
        "entities": out_entities,
        "complex": out_complexes,
        "enums": out_enums,
    })
}

/// Verifies the invariants `src/schema.rs` relies on, so a malformed output fails the build
/// instead of leaving the sandbox without a schema at run time.
fn check(out: &Value) {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    let known = |ty: &str| {
        ty.starts_with("Edm.") || out["complex"].get(ty).is_some() || out["enums"].get(ty).is_some()
    };
    for section in ["entities", "complex"] {
        let map = out[section].as_object().expect("section is an object");
        for (name, def) in map {
            if let Some(base) = def["base"].as_str() {
                assert!(
                    out[section].get(base).is_some(),
                    "{name}: base type {base} missing from '{section}'"
                );
            }
            for p in def["props"].as_array().expect("props is an array") {
                let fields = p.as_array().expect("property is an array");
                let (n, ty) = (fields[0].as_str(), fields[1].as_str());
                let (Some(n), Some(ty)) = (n, ty) else {
                    panic!("{name}: malformed property {p}");
                };
                assert!(
                    is_name(n) && is_name(ty),
                    "{name}: odd property name or type {p}"
                );
                assert!(known(ty), "{name}.{n}: type {ty} not emitted");
                assert!(fields[2].is_boolean() && fields[3].is_boolean());
            }
        }
    }
    for (name, def) in out["enums"].as_object().expect("enums is an object") {
        let members = def["members"].as_array().expect("members is an array");
        assert!(!members.is_empty(), "enum {name} has no members");
    }
    for root in ROOTS {
        assert!(out["entities"].get(*root).is_some(), "{root} not emitted");
    }
}

use serde_json::{Value, json};

use super::*;
use crate::Catalog;

fn opts(ops: &[&str]) -> ImportOptions {
    ImportOptions {
        operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        credential: "api".into(),
        name_prefix: Some("pets".into()),
        ..ImportOptions::default()
    }
}

fn load(text: &str) -> Catalog {
    Catalog::from_source(Path::new("t.yaml"), text, portcullis_core::json::Limits::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

/// A 3.0 document exercising refs (nested, repeated, recursive), nullable, legacy bounds,
/// readOnly, headers and a path/body name collision.
fn spec30() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Pet Store", "version": "1.2.3"},
        "servers": [{"url": "https://{region}.pets.example/v1/", "variables": {"region": {"default": "eu"}}}],
        "paths": {
            "/stores/{storeId}/pets": {
                "parameters": [{"$ref": "#/components/parameters/StoreId"}],
                "post": {
                    "operationId": "pets/create",
                    "summary": "  Create a pet\n  in a store ",
                    "parameters": [
                        {"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}},
                        {"name": "Authorization", "in": "header", "schema": {"type": "string"}},
                        {"name": "dry-run", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "requestBody": {"$ref": "#/components/requestBodies/NewPet"},
                    "responses": {"201": {"description": "ok"}}
                },
                "get": {
                    "operationId": "pets/list",
                    "description": "List pets.\n\nMore text.",
                    "parameters": [
                        {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                        {"name": "fields", "in": "query", "explode": false, "schema": {"type": "array", "items": {"type": "string"}}},
                        {"name": "filter", "in": "query", "style": "deepObject", "schema": {"type": "object"}},
                        {"name": "limit", "in": "query", "required": true,
                         "schema": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 100}}
                    ],
                    "responses": {"200": {"description": "ok"}}
                }
            },
            "/stores/{storeId}/pets/{id}": {
                "put": {
                    "operationId": "pets/replace",
                    "parameters": [
                        {"$ref": "#/components/parameters/StoreId"},
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                    "responses": {"200": {"description": "ok"}}
                },
                "delete": {
                    "operationId": "pets/delete",
                    "parameters": [
                        {"$ref": "#/components/parameters/StoreId"},
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}},
                        {"name": "session", "in": "cookie", "schema": {"type": "string"}}
                    ],
                    "responses": {"204": {"description": "gone"}}
                },
                "patch": {
                    "operationId": "pets/upload",
                    "parameters": [{"$ref": "#/components/parameters/StoreId"},
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                    "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
                    "responses": {"200": {"description": "ok"}}
                }
            },
            "/health": {"get": {"responses": {"200": {"description": "ok"}}}}
        },
        "components": {
            "parameters": {"StoreId": {"$ref": "#/components/parameters/StoreIdReal"},
                           "StoreIdReal": {"name": "storeId", "in": "path", "required": true,
                                           "description": "The store.", "schema": {"type": "string", "pattern": "^[a-z]+$"}}},
            "requestBodies": {"NewPet": {"required": true, "content": {"application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/NewPet"}}}}},
            "schemas": {
                "Name": {"type": "string", "minLength": 1, "maxLength": 50, "example": "Rex"},
                "NewPet": {
                    "type": "object", "required": ["name", "id"], "xml": {"name": "pet"},
                    "discriminator": {"propertyName": "kind"},
                    "properties": {
                        "id": {"type": "integer", "readOnly": true},
                        "name": {"$ref": "#/components/schemas/Name"},
                        "nickname": {"$ref": "#/components/schemas/Name"},
                        "owner": {"type": "string", "nullable": true, "format": "email"},
                        "kind": {"type": "string", "enum": ["cat", "dog"], "nullable": true},
                        "parent": {"$ref": "#/components/schemas/Tree"},
                        "look": {"type": "string", "pattern": "^(?=a)b"}
                    },
                    "additionalProperties": false
                },
                "Tree": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}},
                "Pet": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"$ref": "#/components/schemas/Name"}}}
            }
        }
    })
}

#[test]
fn a_30_operation_becomes_a_loadable_action() {
    let text = import(&spec30().to_string(), &opts(&["pets/create"])).unwrap();
    let catalog = load(&text);
    let a = catalog.get("pets.pets_create").unwrap();
    assert_eq!(a.description, "Create a pet in a store");
    assert!(text.starts_with("# Imported by `portcullis catalog import-openapi` from Pet Store 1.2.3 (OpenAPI 3.0),\n# operation `pets/create`: POST /stores/{storeId}/pets.\n"), "{text}");
    let s = &a.input_schema;
    let props = s["properties"].as_object().unwrap();
    // Parameters, then body properties flattened; read-only `id` dropped, also from `required`.
    let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "dry_run",
            "kind",
            "look",
            "name",
            "nickname",
            "owner",
            "parent",
            "storeId",
            "x_request_id"
        ]
    );
    let mut required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["name", "storeId"]);
    assert_eq!(
        props["name"],
        json!({"type": "string", "minLength": 1, "maxLength": 50})
    );
    assert_eq!(
        props["storeId"],
        json!({"type": "string", "pattern": "^[a-z]+$", "description": "The store."})
    );
    assert_eq!(props["owner"], json!({"type": ["string", "null"], "format": "email"}));
    assert_eq!(
        props["kind"],
        json!({"type": ["string", "null"], "enum": ["cat", "dog", null]})
    );
    // Look-ahead can't run in the validator's regex engine: dropped, and said so.
    assert_eq!(props["look"], json!({"type": "string"}));
    assert!(text.contains("# Note: pattern `\"^(?=a)b\"` is dropped"), "{text}");
    // The recursion is cut after one level, keeping the type.
    assert_eq!(
        props["parent"]["properties"]["children"]["items"],
        json!({"type": "object"})
    );
    let req = a.http().unwrap();
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.url.realm(), "https://eu.pets.example");
    assert!(
        text.contains("url: \"https://eu.pets.example/v1/stores/{storeId}/pets?dry-run={dry_run}\""),
        "{text}"
    );
    // Authorization comes from the credential, never from a parameter.
    assert!(text.contains("X-Request-Id: \"{x_request_id}\""), "{text}");
    assert!(!text.contains("Authorization"), "{text}");
    assert_eq!(a.credential.as_deref(), Some("api"));
    assert_eq!(a.resource.entity_type, "Store");
    assert_eq!(a.resource.id.to_string(), "{storeId}");
    assert!(!a.hints.read_only && !a.hints.idempotent && !a.hints.destructive);
    assert!(text.contains("idempotent: false"));
}

#[test]
fn query_lists_legacy_bounds_and_hints_from_the_method() {
    let text = import(&spec30().to_string(), &opts(&["pets/list", "pets/replace"])).unwrap();
    let catalog = load(&text);
    let list = catalog.get("pets.pets_list").unwrap();
    assert_eq!(list.description, "List pets.");
    assert_eq!(
        list.input_schema["properties"]["limit"],
        json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 100})
    );
    assert!(list.hints.read_only && list.hints.idempotent);
    // Optional parameters the gateway can't write are left out, and said so.
    assert!(list.input_schema["properties"].get("fields").is_none());
    assert!(
        text.contains(
            "# Note: optional query parameter `fields` is left out: lists are sent as repeated `name=value` pairs"
        ),
        "{text}"
    );
    assert!(
        text.contains("# Note: optional query parameter `filter` is left out: objects can't be sent as parameters"),
        "{text}"
    );
    // A body that isn't flattened because `id` is taken by the path parameter.
    let replace = catalog.get("pets.pets_replace").unwrap();
    assert!(replace.hints.idempotent && !replace.hints.read_only);
    assert_eq!(
        replace.input_schema["properties"]["body"]["properties"]["id"],
        json!({"type": "integer"})
    );
    assert!(
        replace.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("body"))
    );
    assert!(
        text.contains("# Note: the request body is the input field `body`"),
        "{text}"
    );
    assert!(text.contains("  body: \"{body}\"\n"), "{text}");
    assert_eq!(replace.resource.id.to_string(), "{storeId}");
}

#[test]
fn the_same_document_gives_the_same_bytes_and_yaml_reads_like_json() {
    let ops = opts(&["pets/create", "pets/list", "pets/replace"]);
    let json_text = spec30().to_string();
    let pretty = serde_json::to_string_pretty(&spec30()).unwrap();
    // Written with sorted keys: same bytes, as nothing in the output follows key order.
    let yaml_text = super::yaml::write_document(&super::yaml::Node::from_json(&spec30()));
    let a = import(&json_text, &ops).unwrap();
    assert_eq!(a, import(&json_text, &ops).unwrap());
    assert_eq!(a, import(&pretty, &ops).unwrap());
    assert_eq!(a, import(&yaml_text, &ops).unwrap());
    assert_eq!(load(&a).len(), 3);
}

#[test]
fn progress_is_told_the_selection_each_action_and_the_check() {
    let ops = opts(&["pets/create", "pets/list", "pets/replace"]);
    let text = spec30().to_string();
    let mut seen = Vec::new();
    let out = import_with_progress(&text, &ops, |p| seen.push(p)).unwrap();
    assert_eq!(out, import(&text, &ops).unwrap(), "the same file as without progress");
    assert_eq!(
        seen,
        [
            ImportProgress::Selected { total: 3 },
            ImportProgress::Built { done: 1 },
            ImportProgress::Built { done: 2 },
            ImportProgress::Built { done: 3 },
            ImportProgress::Checking,
        ]
    );
    let mut seen = Vec::new();
    assert!(import_with_progress(&text, &opts(&["pets/nope"]), |p| seen.push(p)).is_err());
    assert!(
        seen.is_empty(),
        "nothing is selected when an operation is unknown: {seen:?}"
    );
}

#[test]
fn glob_selection_and_refusals_name_the_operation() {
    let spec = spec30().to_string();
    let mut o = opts(&[]);
    o.all_matching = Some("pets/[lr]*".into());
    let text = import(&spec, &o).unwrap();
    assert_eq!(load(&text).len(), 2);
    let err = |ops: &[&str]| import(&spec, &opts(ops)).unwrap_err().to_string();
    assert_eq!(
        err(&["pets/delete"]),
        "operation `pets/delete`: parameter `session` is in a cookie, which actions can't send"
    );
    assert_eq!(
        err(&["pets/upload"]),
        "operation `pets/upload`: the request body is `application/octet-stream`: only `application/json` bodies are supported"
    );
    assert_eq!(
        err(&["pets/creat"]),
        "unknown operation `pets/creat`; did you mean `pets/create`, `pets/list`, `pets/delete`, `pets/replace`, `pets/upload`?"
    );
    assert_eq!(
        err(&[]),
        "no operation selected: give `--operation ID` or `--all-matching GLOB`"
    );
    o.all_matching = Some("GET /health".into());
    assert_eq!(
        import(&spec, &o).unwrap_err().to_string(),
        "operation `GET /health`: it has no `operationId`, which action names are made from"
    );
    o.all_matching = Some("nothing*".into());
    assert_eq!(
        import(&spec, &o).unwrap_err().to_string(),
        "no operation id matches `nothing*`"
    );
}

#[test]
fn remote_and_dangling_refs_and_other_versions_are_refused() {
    let mut spec = spec30();
    spec["components"]["schemas"]["Name"] = json!({"$ref": "other.yaml#/Name"});
    assert_eq!(
        import(&spec.to_string(), &opts(&["pets/create"]))
            .unwrap_err()
            .to_string(),
        "operation `pets/create`: reference `other.yaml#/Name` is not local: only `#/...` references are resolved"
    );
    spec["components"]["schemas"]["Name"] = json!({"$ref": "#/components/schemas/Nope"});
    assert!(
        import(&spec.to_string(), &opts(&["pets/create"]))
            .unwrap_err()
            .to_string()
            .contains("points to nothing")
    );
    spec["components"]["parameters"]["StoreIdReal"] = json!({"$ref": "#/components/parameters/StoreId"});
    assert!(
        import(&spec.to_string(), &opts(&["pets/list"]))
            .unwrap_err()
            .to_string()
            .contains("loops")
    );
    let swagger = json!({"swagger": "2.0", "paths": {}}).to_string();
    assert_eq!(
        import(&swagger, &opts(&["x"])).unwrap_err().to_string(),
        "unsupported OpenAPI version `swagger \"2.0\"`: only 3.0 and 3.1 documents are read"
    );
}

#[test]
fn server_override_and_missing_servers() {
    let mut spec = spec30();
    let mut o = opts(&["pets/list"]);
    o.server = Some("http://127.0.0.1:4010/".into());
    let text = import(&spec.to_string(), &o).unwrap();
    assert!(
        text.contains("url: \"http://127.0.0.1:4010/stores/{storeId}/pets?tag={tag}&limit={limit}\""),
        "{text}"
    );
    spec["servers"] = json!([{"url": "/relative"}]);
    assert!(
        import(&spec.to_string(), &opts(&["pets/list"]))
            .unwrap_err()
            .to_string()
            .contains("`--server`")
    );
}

/// 3.1: type arrays, `$ref` with siblings, `const`, `examples`; names that collide.
#[test]
fn a_31_yaml_document_with_collisions() {
    let yaml = r##"
openapi: 3.1.0
info: {title: Notes, version: "2"}
servers: [{url: "https://notes.example"}]
paths:
  /notes/{id}:
    patch:
      operationId: updateNote
      description: |
        Update a note.
        Second line of the paragraph.

        Another paragraph.
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
        - {name: id, in: query, schema: {type: string}}
        - {name: if-match, in: header, required: true, schema: {type: string}}
        - {name: If_Match, in: header, schema: {type: string}}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                text: {$ref: "#/components/schemas/Text", maxLength: 10}
                color: {type: [string, "null"], examples: [red]}
                kind: {const: note}
components:
  schemas:
    Text: {type: string, minLength: 1}
"##;
    let o = ImportOptions {
        operations: vec!["updateNote".into()],
        credential: "notes".into(),
        name_prefix: Some("notes_".into()),
        ..ImportOptions::default()
    };
    let text = import(yaml, &o).unwrap();
    let catalog = load(&text);
    let a = catalog.get("notes_updateNote").unwrap();
    assert_eq!(a.description, "Update a note. Second line of the paragraph.");
    let p = &a.input_schema["properties"];
    assert_eq!(
        p["text"],
        json!({"allOf": [{"type": "string", "minLength": 1}, {"maxLength": 10}]})
    );
    assert_eq!(p["color"], json!({"type": ["string", "null"]}));
    assert_eq!(p["kind"], json!({"const": "note"}));
    assert!(p["id_query"].is_object() && p["if_match_header"].is_object(), "{text}");
    assert!(
        text.contains("url: \"https://notes.example/notes/{id}?id={id_query}\""),
        "{text}"
    );
    assert!(text.contains("if-match: \"{if_match}\""), "{text}");
    assert!(
        text.contains("# Note: query parameter `id` is input field `id_query` (`id` was taken)"),
        "{text}"
    );
    assert_eq!(a.resource.entity_type, "Note");
}

#[test]
fn action_names_follow_the_rules() {
    assert_eq!(
        build::action_name("issues/create", Some("github")),
        "github.issues_create"
    );
    assert_eq!(build::action_name("get user by id", None), "get_user_by_id");
    assert_eq!(build::action_name("x", Some("api.")), "api.x");
}

fn named(ops: &[&str], names: &[(&str, &str)]) -> ImportOptions {
    ImportOptions {
        names: names
            .iter()
            .map(|(id, name)| ((*id).to_owned(), (*name).to_owned()))
            .collect(),
        ..opts(ops)
    }
}

#[test]
fn a_given_name_replaces_the_derived_one_without_the_prefix() {
    let spec = spec30().to_string();
    let o = named(&["pets/create", "pets/list"], &[("pets/create", "shop.add_pet")]);
    let text = import(&spec, &o).unwrap();
    let catalog = load(&text);
    assert_eq!(catalog.len(), 2);
    assert!(catalog.get("shop.add_pet").is_some(), "{text}");
    assert!(
        catalog.get("pets.pets_list").is_some(),
        "the others keep theirs: {text}"
    );
    assert!(catalog.get("pets.pets_create").is_none(), "{text}");
    // The operation is still named in the header, so a reviewer can trace the action back.
    assert!(
        text.starts_with("# Imported by `portcullis catalog import-openapi` from Pet Store 1.2.3 (OpenAPI 3.0),\n# operation `pets/create`: POST /stores/{storeId}/pets.\n"),
        "{text}"
    );
    let first_name = text.lines().find(|l| l.starts_with("name: "));
    assert_eq!(first_name, Some("name: shop.add_pet"), "{text}");
    assert_eq!(text, import(&spec, &o).unwrap(), "the same bytes every time");

    // An operation selected by the glob can be named too.
    let mut o = named(&[], &[("pets/list", "shop.list_pets")]);
    o.all_matching = Some("pets/[lr]*".into());
    let catalog = load(&import(&spec, &o).unwrap());
    assert!(catalog.get("shop.list_pets").is_some() && catalog.get("pets.pets_replace").is_some());
}

#[test]
fn given_names_are_refused_before_anything_is_built() {
    let spec = spec30().to_string();
    let err = |ops: &[&str], names: &[(&str, &str)]| {
        let mut seen = Vec::new();
        let e = import_with_progress(&spec, &named(ops, names), |p| seen.push(p))
            .unwrap_err()
            .to_string();
        assert!(seen.is_empty(), "{e}: nothing is built: {seen:?}");
        e
    };
    assert_eq!(
        err(&["pets/create"], &[("pets/create", "add pet")]),
        "name for operation `pets/create`: invalid action name `add pet`: may contain only ASCII letters, digits, `_`, `-` and `.`"
    );
    assert_eq!(
        err(&["pets/create"], &[("pets/create", "")]),
        "name for operation `pets/create`: invalid action name ``: must be 1 to 128 characters"
    );
    assert_eq!(
        err(&["pets/create"], &[("pets/creat", "shop.add")]),
        "unknown operation `pets/creat`; did you mean `pets/create`, `pets/list`, `pets/delete`, `pets/replace`, `pets/upload`?"
    );
    assert_eq!(
        err(&["pets/create"], &[("pets/list", "shop.list")]),
        "a name is given for operation `pets/list`, which is not imported: select it with `--operation pets/list` or `--all-matching`"
    );
    assert_eq!(
        err(&["pets/create"], &[("pets/create", "a"), ("pets/create", "b")]),
        "operation `pets/create` is given more than one name"
    );
    // A given name that another operation's derived name takes, and two given names alike.
    assert_eq!(
        err(&["pets/list", "pets/create"], &[("pets/create", "pets.pets_list")]),
        "operations `pets/list` and `pets/create` would both be action `pets.pets_list`: give one of them another name with `--name OPERATION_ID=ACTION_NAME`"
    );
    assert_eq!(
        err(
            &["pets/create", "pets/list"],
            &[("pets/create", "shop.pets"), ("pets/list", "shop.pets")]
        ),
        "operations `pets/create` and `pets/list` would both be action `shop.pets`: give one of them another name with `--name OPERATION_ID=ACTION_NAME`"
    );
}

#[test]
fn operation_ids_that_derive_one_name_are_refused_until_one_is_named() {
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "Tags", "version": "1"},
        "servers": [{"url": "https://tags.example"}],
        "paths": {
            "/tags": {
                "get": {"operationId": "tags/list", "responses": {"200": {"description": "ok"}}},
                "post": {"operationId": "tags list", "responses": {"201": {"description": "ok"}}}
            }
        }
    })
    .to_string();
    let mut o = named(&["tags/list", "tags list"], &[]);
    o.name_prefix = None;
    assert_eq!(
        import(&spec, &o).unwrap_err().to_string(),
        "operations `tags/list` and `tags list` would both be action `tags_list`: give one of them another name with `--name OPERATION_ID=ACTION_NAME`"
    );
    o.names = vec![("tags list".into(), "tags_create".into())];
    let catalog = load(&import(&spec, &o).unwrap());
    assert!(catalog.get("tags_list").is_some() && catalog.get("tags_create").is_some());
}

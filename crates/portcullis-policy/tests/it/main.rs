//! Policy loading and decisions over a small catalog.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#![cfg(test)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis_catalog::Catalog;
use portcullis_core::json::Limits;
use portcullis_core::{AgentId, Effect};
use portcullis_policy::{AgentEntity, EntityDecl, EntityRef, PolicyEngine, PolicyInputs};
use serde_json::{Map, Value, json};

const ACTIONS: &str = r#"
name: billing.refund
input:
  type: object
  required: [customer, amount]
  properties:
    customer: {type: string}
    amount: {type: number}
    note: {type: string}
resource: {type: Customer, id: "{customer}"}
request: {method: POST, url: "https://billing.test/refunds", body: {amount: "{amount}"}}
---
name: email.send
input:
  type: object
  required: [to, subject]
  properties:
    to: {type: array, items: {type: string, format: email}}
    subject: {type: string}
    count: {type: integer}
request: {method: POST, url: "https://mail.test/send", body: {to: "{to}"}}
---
name: admin.delete_everything
input: {type: object}
request: {method: DELETE, url: "https://admin.test/all"}
---
name: payments.transfer
input:
  type: object
  required: [payee]
  properties:
    payee: {type: string}
    amount: {type: number}
    units: {type: integer}
resource: {type: Payee, id: "{payee}"}
request: {method: POST, url: "https://pay.test/transfers", body: {payee: "{payee}"}}
"#;

const POLICIES: &str = r#"
@id("refunds")
@reason("finance bots may refund")
permit (principal in AgentGroup::"finance", action == Action::"billing.refund", resource)
when { context.input.amount.lessThanOrEqual(decimal("500.0")) };

@id("big-refunds-need-a-person")
@hold("refunds above 100 need a person")
permit (principal in AgentGroup::"finance", action == Action::"billing.refund", resource)
when { context.input.amount.greaterThan(decimal("100.0")) && context.input.amount.lessThanOrEqual(decimal("500.0")) };

@id("no-blocked-customers")
@reason("this customer is blocked")
forbid (principal, action, resource) when { resource in Customer::"blocked" };

@id("mail")
permit (principal == Agent::"mailer", action == Action::"email.send", resource)
when { Allowlist::"domains".values.containsAll(context.derived.to.domains) };

@id("overflow")
permit (principal == Agent::"mailer", action == Action::"email.send", resource)
when { context.input has count && context.input.count + 9223372036854775807 > 0 };
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    agents: BTreeMap<String, AgentEntity>,
    entities: Vec<EntityDecl>,
    files: Vec<PathBuf>,
}

fn fixture(policies: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.cedar");
    std::fs::write(&file, policies).unwrap();
    let catalog = Catalog::from_source(Path::new("actions.yaml"), ACTIONS, Limits::default()).unwrap();
    let mut agents = BTreeMap::new();
    agents.insert(
        "refunder".to_owned(),
        AgentEntity {
            attributes: Map::new(),
            groups: vec!["finance".into()],
        },
    );
    let mut attrs = Map::new();
    attrs.insert("team".into(), json!("comms"));
    agents.insert(
        "mailer".to_owned(),
        AgentEntity {
            attributes: attrs,
            groups: vec![],
        },
    );
    let mut allow = Map::new();
    allow.insert("values".into(), json!(["example.com", "partner.org"]));
    let entities = vec![
        EntityDecl {
            uid: EntityRef {
                entity_type: "Allowlist".into(),
                id: "domains".into(),
            },
            attrs: allow,
            parents: vec![],
        },
        EntityDecl {
            uid: EntityRef {
                entity_type: "Customer".into(),
                id: "mallory".into(),
            },
            attrs: Map::new(),
            parents: vec![EntityRef {
                entity_type: "Customer".into(),
                id: "blocked".into(),
            }],
        },
    ];
    Fixture {
        _dir: dir,
        catalog,
        agents,
        entities,
        files: vec![file],
    }
}

fn engine(f: &Fixture) -> Result<PolicyEngine, Vec<String>> {
    PolicyEngine::load(PolicyInputs {
        catalog: &f.catalog,
        agents: &f.agents,
        entities: &f.entities,
        policy_files: &f.files,
        counters: &std::collections::BTreeMap::new(),
        claim_attributes: &[],
    })
    .map_err(|d| d.into_iter().map(|d| d.to_string()).collect())
}

fn decide(e: &PolicyEngine, f: &Fixture, agent: &str, action: &str, input: Value) -> (Effect, Vec<String>) {
    let action = f.catalog.get(action).unwrap();
    let valid = action.validate(input).unwrap();
    let findings = portcullis_redact::detect::Detector::builtin().scan_json(valid.value());
    let d = e.decide(
        &AgentId::new(agent).unwrap(),
        action,
        valid,
        &findings,
        &[],
        time::OffsetDateTime::now_utc(),
    );
    (d.decision().effect, d.decision().reasons.clone())
}

#[test]
fn permit_hold_forbid_and_default_deny() {
    let f = fixture(POLICIES);
    let e = engine(&f).unwrap();
    assert_eq!(
        decide(
            &e,
            &f,
            "refunder",
            "billing.refund",
            json!({"customer": "c1", "amount": 40})
        ),
        (Effect::Allow, vec!["finance bots may refund".into()])
    );
    assert_eq!(
        decide(
            &e,
            &f,
            "refunder",
            "billing.refund",
            json!({"customer": "c1", "amount": 250.5})
        )
        .0,
        Effect::Hold
    );
    assert_eq!(
        decide(
            &e,
            &f,
            "refunder",
            "billing.refund",
            json!({"customer": "c1", "amount": 900})
        )
        .0,
        Effect::Deny
    );
    assert_eq!(
        decide(
            &e,
            &f,
            "refunder",
            "billing.refund",
            json!({"customer": "mallory", "amount": 5})
        ),
        (Effect::Deny, vec!["this customer is blocked".into()]),
        "forbid wins over permit"
    );
    let (effect, reasons) = decide(
        &e,
        &f,
        "mailer",
        "billing.refund",
        json!({"customer": "c1", "amount": 5}),
    );
    assert_eq!(effect, Effect::Deny);
    assert_eq!(
        reasons,
        vec!["no policy permits agent `mailer` to run `billing.refund`"]
    );
}

#[test]
fn derived_domains_and_entity_data_drive_email_policy() {
    let f = fixture(POLICIES);
    let e = engine(&f).unwrap();
    let ok = json!({"to": ["a@example.com", "B@Partner.org"], "subject": "hi"});
    assert_eq!(decide(&e, &f, "mailer", "email.send", ok).0, Effect::Allow);
    let outside = json!({"to": ["a@example.com", "x@evil.test"], "subject": "hi"});
    assert_eq!(decide(&e, &f, "mailer", "email.send", outside).0, Effect::Deny);
}

#[test]
fn an_evaluation_error_denies_even_when_another_policy_permits() {
    let f = fixture(POLICIES);
    let e = engine(&f).unwrap();
    let input = json!({"to": ["a@example.com"], "subject": "hi", "count": 1});
    let (effect, reasons) = decide(&e, &f, "mailer", "email.send", input);
    assert_eq!(effect, Effect::Deny);
    assert!(reasons[0].contains("`overflow` could not be evaluated"), "{reasons:?}");
}

#[test]
fn amounts_cedar_cannot_represent_exactly_are_denied_not_rounded() {
    let f = fixture(POLICIES);
    let e = engine(&f).unwrap();
    let (effect, reasons) = decide(
        &e,
        &f,
        "refunder",
        "billing.refund",
        json!({"customer": "c1", "amount": 500.00001}),
    );
    assert_eq!(effect, Effect::Deny, "{reasons:?}");
    assert!(reasons[0].contains("`/amount`"), "{reasons:?}");
}

#[test]
fn optional_values_cedar_cannot_represent_exactly_are_denied_not_left_out() {
    // Left out of the context, an optional value would skip every policy that tests it with
    // `has`, while the request sent upstream still carries it.
    let policies = format!(
        "{POLICIES}\n{}",
        r#"
@id("transfers")
permit (principal in AgentGroup::"finance", action == Action::"payments.transfer", resource);

@id("no-big-transfers")
@reason("transfers above 1000 go through the bank")
forbid (principal, action == Action::"payments.transfer", resource)
when { context.input has amount && context.input.amount.greaterThan(decimal("1000.0")) };

@id("no-bulk-transfers")
@reason("at most a million units")
forbid (principal, action == Action::"payments.transfer", resource)
when { context.input has units && context.input.units > 1000000 };
"#
    );
    let f = fixture(&policies);
    let e = engine(&f).unwrap();
    let transfer = |input| decide(&e, &f, "refunder", "payments.transfer", input);
    assert_eq!(
        transfer(json!({"payee": "p", "amount": 50.25, "units": 7})).0,
        Effect::Allow
    );
    assert_eq!(
        transfer(json!({"payee": "p", "amount": 5000})),
        (
            Effect::Deny,
            vec!["transfers above 1000 go through the bank".to_owned()]
        )
    );
    let refused = [
        (json!({"payee": "p", "amount": 5000.00001}), "`/amount`"),
        (
            json!({"payee": "p", "units": 9_223_372_036_854_775_808_u64}),
            "`/units`",
        ),
        (json!({"payee": "p", "units": 1e20}), "`/units`"),
    ];
    for (input, field) in refused {
        let (effect, reasons) = transfer(input.clone());
        assert_eq!(effect, Effect::Deny, "{input}: {reasons:?}");
        assert!(
            reasons[0].contains("the input can't be evaluated by policy") && reasons[0].contains(field),
            "{input}: {reasons:?}"
        );
    }
}

#[test]
fn visibility_follows_permit_scopes() {
    let f = fixture(POLICIES);
    let e = engine(&f).unwrap();
    let refunder = AgentId::new("refunder").unwrap();
    let mailer = AgentId::new("mailer").unwrap();
    let stranger = AgentId::new("stranger").unwrap();
    let refund = f.catalog.get("billing.refund").unwrap();
    let send = f.catalog.get("email.send").unwrap();
    let nuke = f.catalog.get("admin.delete_everything").unwrap();
    assert!(e.visible(&refunder, refund));
    assert!(!e.visible(&refunder, send));
    assert!(e.visible(&mailer, send));
    assert!(!e.visible(&stranger, refund));
    assert!(!e.visible(&mailer, nuke));
}

#[test]
fn policies_naming_missing_fields_actions_or_attributes_fail_to_load_with_lines() {
    let bad = r#"permit (principal, action == Action::"billing.refund", resource);

permit (principal, action == Action::"billing.refund", resource)
when { context.input.amout.greaterThan(decimal("1.0")) };

permit (principal, action == Action::"billing.nope", resource);

permit (principal, action == Action::"email.send", resource)
when { principal.team == "comms" };

@hold("")
permit (principal, action, resource);

@hold("x")
forbid (principal, action, resource);
"#;
    let f = fixture(bad);
    let errs = engine(&f).unwrap_err();
    let all = errs.join("\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("main.cedar:11") && e.contains("`@hold` needs a reason")),
        "{all}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("main.cedar:14") && e.contains("only applies to `permit`")),
        "{all}"
    );
    // Validation runs once the file parses cleanly; check it separately.
    let f = fixture(&bad[..bad.find("@hold").unwrap()]);
    let errs = engine(&f).unwrap_err();
    let all = errs.join("\n");
    assert!(
        errs.iter().any(|e| e.contains("main.cedar:4") && e.contains("amout")),
        "{all}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("main.cedar:6") && e.contains("billing.nope")),
        "{all}"
    );
    assert!(
        errs.iter().any(|e| e.contains("main.cedar:9") && e.contains("team")),
        "optional attributes need `has`: {all}"
    );
}

#[test]
fn syntax_errors_have_lines() {
    let f = fixture("permit (principal, action, resource)\nwhen { context.input. };\n");
    let errs = engine(&f).unwrap_err();
    assert!(
        errs[0].contains("main.cedar:2") && errs[0].contains("cedar syntax"),
        "{errs:?}"
    );
}

#[test]
fn findings_in_the_input_are_policy_context() {
    let policies = format!(
        "{POLICIES}\n{}",
        r#"
@id("no-cards-in-notes")
@reason("a refund note must not carry a card number")
forbid (principal, action == Action::"billing.refund", resource)
when { context.findings.at.contains({kind: "payment-card", pointer: "/note"}) };

@id("secrets-anywhere-need-a-person")
@hold("the input carries a secret")
permit (principal in AgentGroup::"finance", action == Action::"billing.refund", resource)
when { context.findings.categories.contains("secret") && context.findings.secrets.contains("/note") };
"#
    );
    let f = fixture(&policies);
    let e = engine(&f).unwrap();
    let refund = |note: &str| json!({"customer": "c1", "amount": 40, "note": note});
    assert_eq!(
        decide(&e, &f, "refunder", "billing.refund", refund("thanks")).0,
        Effect::Allow
    );
    let (effect, reasons) = decide(&e, &f, "refunder", "billing.refund", refund("card 4111 1111 1111 1111"));
    assert_eq!(effect, Effect::Deny);
    assert_eq!(reasons, ["a refund note must not carry a card number"]);
    let (effect, reasons) = decide(&e, &f, "refunder", "billing.refund", refund("key AKIAZ7Q3XKJ5VW2MLP4N"));
    assert_eq!(effect, Effect::Hold, "{reasons:?}");
    assert_eq!(reasons, ["the input carries a secret"]);
}

#[test]
fn a_decision_weighs_exactly_the_policies_whose_scope_admits_its_action() {
    // Each action is decided on the policies that can apply to it: unscoped ones, `==` it,
    // and `in [...]` lists naming it. A policy about another action that would fail to
    // evaluate (`overflow`) never touches this one's decision.
    let policies = format!(
        "{POLICIES}\n{}",
        r#"
@id("list-forbid")
@reason("listed: no refunds with a note")
forbid (principal, action in [Action::"email.send", Action::"billing.refund"], resource)
when { context.input has note };

@id("any-action-hold")
@hold("anything with a note about fraud needs a person")
permit (principal, action, resource)
when { context has input };
"#
    );
    let f = fixture(&policies);
    let e = engine(&f).unwrap();
    let refund = |input| decide(&e, &f, "refunder", "billing.refund", input);
    assert_eq!(
        refund(json!({"customer": "c1", "amount": 50, "note": "x"})),
        (Effect::Deny, vec!["listed: no refunds with a note".to_owned()])
    );
    // The unscoped hold applies to every action, this one included.
    let (effect, _) = refund(json!({"customer": "c1", "amount": 50}));
    assert_eq!(effect, Effect::Hold);
    // email.send still sees its own failing policy, and the list and unscoped ones.
    let (effect, reasons) = decide(
        &e,
        &f,
        "mailer",
        "email.send",
        json!({"to": ["a@example.com"], "subject": "hi", "count": 1}),
    );
    assert_eq!(effect, Effect::Deny);
    assert!(reasons[0].contains("`overflow` could not be evaluated"), "{reasons:?}");
    // An action no policy names is decided by the unscoped ones alone.
    let (effect, _) = decide(&e, &f, "refunder", "admin.delete_everything", json!({}));
    assert_eq!(effect, Effect::Hold, "only the unscoped hold permits it");
}

#[test]
fn where_input_values_came_from_is_policy_context_typed_by_the_input_fields() {
    use portcullis_policy::{Facts, InputProvenance, Mark};
    let policies = format!(
        "{POLICIES}\n{}",
        r#"
@id("customer-from-untrusted-data-needs-a-person")
@hold("the customer came from untrusted data")
permit (principal in AgentGroup::"finance", action == Action::"billing.refund", resource)
when { context.provenance.pointers.contains("/customer") };

@id("no-notes-from-web-pages")
@reason("the note was read in a web page")
forbid (principal, action == Action::"billing.refund", resource)
when { context.provenance.fields has note && context.provenance.fields.note.sources.contains("web.fetch") };

@id("refunds-need-a-session")
@hold("no session")
permit (principal in AgentGroup::"finance", action == Action::"billing.refund", resource)
when { !context.provenance.session && context.input.amount.greaterThan(decimal("50.0")) };
"#
    );
    let f = fixture(&policies);
    let e = engine(&f).unwrap();
    let action = f.catalog.get("billing.refund").unwrap();
    let agent = AgentId::new("refunder").unwrap();
    let decide_with = |provenance: &InputProvenance| {
        let valid = action
            .validate(json!({"customer": "c1", "amount": 60, "note": "see ticket"}))
            .unwrap();
        let facts = Facts {
            findings: &[],
            counters: &[],
            provenance,
            now: time::OffsetDateTime::now_utc(),
        };
        let d = e.decide_with(&agent, None, action, valid, &facts);
        (d.decision().effect, d.decision().reasons.clone())
    };
    let mark = |pointer: &str, source: &str| Mark {
        pointer: pointer.into(),
        source: source.into(),
        read_at: 1_800_000_000,
    };
    let session = |marks: Vec<Mark>| InputProvenance { session: true, marks };
    assert_eq!(decide_with(&session(vec![])).0, Effect::Allow);
    assert_eq!(
        decide_with(&InputProvenance::NONE),
        (Effect::Hold, vec!["no session".to_owned()])
    );
    assert_eq!(
        decide_with(&session(vec![mark("/customer", "mail.read")])),
        (Effect::Hold, vec!["the customer came from untrusted data".to_owned()])
    );
    assert_eq!(
        decide_with(&session(vec![mark("/note", "mail.read")])).0,
        Effect::Allow,
        "a note from an email is fine"
    );
    assert_eq!(
        decide_with(&session(vec![
            mark("/note", "web.fetch"),
            mark("/customer", "web.fetch")
        ])),
        (Effect::Deny, vec!["the note was read in a web page".to_owned()])
    );

    // `fields` is typed from the input: a field the action doesn't have is a load error.
    let typo = format!(
        "{POLICIES}\n{}",
        r#"
forbid (principal, action == Action::"billing.refund", resource)
when { context.provenance.fields.notes.sources.contains("x") };
"#
    );
    let problems = engine(&fixture(&typo)).err().unwrap();
    assert!(problems.iter().any(|p| p.contains("notes")), "{problems:?}");
}

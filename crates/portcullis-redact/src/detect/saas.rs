//! Builtin rules for developer-platform and SaaS tokens with a distinctive prefix.
//!
//! Every example token here is synthetic: random characters in the provider's format.

use super::Category::Secret;
use super::Rule;

/// A token recognised by its prefix and the length and alphabet of what follows.
const fn prefixed(
    id: &'static str,
    description: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    examples_true: &'static [&'static str],
    examples_false: &'static [&'static str],
) -> Rule {
    Rule {
        id,
        category: Secret,
        description,
        keywords,
        regex,
        validate: None,
        examples_true,
        examples_false,
    }
}

/// The builtin developer-platform and SaaS rules.
pub(crate) static RULES: &[Rule] = &[
    prefixed(
        "gitlab-pipeline-trigger-token",
        "GitLab pipeline trigger token",
        &["glptt-"],
        r"\bglptt-[0-9a-f]{40}\b",
        &["glptt-eee65f53e9421ce50211670eae679f02e8d28a79"],
        &["glptt-eee65f53"],
    ),
    prefixed(
        "gitlab-runner-token",
        "GitLab runner authentication token",
        &["glrt-"],
        r"\bglrt-[A-Za-z0-9_-]{20,}",
        &["runner token glrt-BEkxGZG2SYE9B2rANN76"],
        &["glrt-x"],
    ),
    prefixed(
        "huggingface-token",
        "Hugging Face access token",
        &["hf_"],
        r"\bhf_[A-Za-z]{34}\b",
        &["HF_TOKEN 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"],
        &["hf_hub_download"],
    ),
    prefixed(
        "digitalocean-token",
        "DigitalOcean personal access, OAuth or refresh token",
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        r"\bdo[opr]_v1_[0-9a-f]{64}\b",
        &["dop_v1_e64dc3cd6089065c3146e80a9c222670bbe4f4c54977656cf2d133187c8df952"],
        &["dop_v1_e64dc3"],
    ),
    prefixed(
        "docker-hub-pat",
        "Docker Hub personal access token",
        &["dckr_pat_"],
        r"\bdckr_pat_[A-Za-z0-9_-]{27,}",
        &["docker login -p dckr_pat_Qd9JjbaCIi05fHFWkvQLuR5qREC"],
        &["dckr_pat_"],
    ),
    prefixed(
        "linear-api-key",
        "Linear API key",
        &["lin_api_"],
        r"\blin_api_[A-Za-z0-9]{40}\b",
        &["lin_api_e6WsT9CBmoEeEuTUIEEciXvC57vvtIy96VWFre5E"],
        &["lin_api_docs"],
    ),
    prefixed(
        "postman-api-key",
        "Postman API key",
        &["PMAK-"],
        r"\bPMAK-[0-9a-f]{24}-[0-9a-f]{34}\b",
        &["PMAK-d0f0cc022238daceee2092f0-73ff80b9465aef7ac86d66c7a644fb1285"],
        &["PMAK-1234"],
    ),
    prefixed(
        "grafana-service-account-token",
        "Grafana service account token",
        &["glsa_"],
        r"\bglsa_[A-Za-z0-9]{32}_[0-9a-f]{8}\b",
        &["glsa_HceR7N1aYohfrUt11ncUE1CR3mCrtRkW_904ce608"],
        &["glsa_short_1234"],
    ),
    prefixed(
        "databricks-token",
        "Databricks personal access token",
        &["dapi"],
        r"\bdapi[0-9a-f]{32}(?:-\d)?\b",
        &["DATABRICKS_TOKEN=dapi7413e3b266f850f1578b5c72dc4ee60c"],
        &["dapi_version"],
    ),
    prefixed(
        "vault-service-token",
        "HashiCorp Vault service or batch token",
        &["hvs.", "hvb."],
        r"\bhv[sb]\.[A-Za-z0-9_-]{90,}",
        &[
            "X-Vault-Token: hvs.r7paMPbfxLnphCsKE4r1j_DbI2EWqR8T4-Lc4lVgnwamSi-Z0OAwDFzP_LVI60zif8-Qr38oNY1DhQCEYTdBkptf-N",
        ],
        &["hvs.short"],
    ),
    prefixed(
        "age-secret-key",
        "age encryption secret key",
        &["AGE-SECRET-KEY-1"],
        r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}\b",
        &["AGE-SECRET-KEY-1L8SVMPC62DDDGWKT55VDVXG0G9SCXM6GVEPXVKH84VY7XPZ7FVT8DT2JXR"],
        &["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
    ),
    prefixed(
        "pulumi-access-token",
        "Pulumi access token",
        &["pul-"],
        r"\bpul-[0-9a-f]{40}\b",
        &["PULUMI_ACCESS_TOKEN=pul-4e23acedbd6b0165debbc6530a2c6a8835c4abd5"],
        &["pul-request"],
    ),
    prefixed(
        "newrelic-user-api-key",
        "New Relic user API key",
        &["NRAK-"],
        r"\bNRAK-[A-Z0-9]{27}\b",
        &["NRAK-ZNLEVT4GAWDORTVNZL8EY65NHZB"],
        &["NRAK-123"],
    ),
    prefixed(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        &["whsec_"],
        r"\bwhsec_[A-Za-z0-9+/]{32,}",
        &["STRIPE_WEBHOOK_SECRET=whsec_HnGvPQcZgDwMpYAGQQR5Vjiga9hk2Goc"],
        &["whsec_"],
    ),
    prefixed(
        "telegram-bot-token",
        "Telegram bot token",
        &[":AA"],
        r"(?:\bbot|\b)(?P<v>\d{8,10}:AA[A-Za-z0-9_-]{33})\b",
        &["https://api.telegram.org/bot969224307:AAJFxUx8V-H2-1kznuk9iklDBfFU0xGoyGo/getMe"],
        &["12:AA"],
    ),
    prefixed(
        "sentry-org-token",
        "Sentry organization auth token",
        &["sntrys_"],
        r"\bsntrys_eyJ[A-Za-z0-9_=-]{20,}_[A-Za-z0-9+/]{43}",
        &[
            "SENTRY_AUTH_TOKEN=sntrys_eyJpYXQiOjE3MDAwMDAwMDAuMCwidXJsIjoiaHR0cHM6Ly9zZW50cnkuaW8ifQ_Jc29gfFM7SfOG16PaGtTPu4R16h1uRlQe9OntjiYjeY",
        ],
        &["sntrys_"],
    ),
    prefixed(
        "square-access-token",
        "Square access token",
        &["sq0atp-", "sq0csp-"],
        r"\bsq0(?:atp|csp)-[A-Za-z0-9_-]{22,}",
        &["sq0atp-fZFHBih2DENcjJLUev99ta"],
        &["sq0atp-"],
    ),
];

//! Builtin rules for credentials without a provider prefix: private key blocks, passwords in
//! URLs and connection strings, and high-entropy values assigned to secret-sounding keys.
//!
//! The generic assignment rule comes last: on a tie it yields to every named format.

use super::Category::Secret;
use super::Rule;
use super::check;

/// The builtin rules for keys, passwords and generic secret assignments.
pub(crate) static RULES: &[Rule] = &[
    Rule {
        id: "private-key",
        category: Secret,
        description: "PEM private key block (PKCS#1, PKCS#8, SEC1, DSA, encrypted)",
        keywords: &["PRIVATE KEY-----"],
        regex: r"-----BEGIN (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----[A-Za-z0-9+/=\s:,\\-]*?-----END (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----",
        validate: None,
        examples_true: &[
            "-----BEGIN PRIVATE KEY-----\nU3ludGhldGljIGtleSBtYXRlcmlhbCBmb3IgdGVzdHM=\n-----END PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\r\nU3ludGhldGlj\r\n-----END RSA PRIVATE KEY-----\r\n",
            // Inside a JSON string as it appears in a raw log line, newlines escaped.
            r#"{"key":"-----BEGIN EC PRIVATE KEY-----\nU3ludGhldGlj\n-----END EC PRIVATE KEY-----\n"}"#,
        ],
        examples_false: &[
            "-----BEGIN PUBLIC KEY-----\nU3ludGhldGlj\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nU3ludGhldGlj\n-----END CERTIFICATE-----",
        ],
    },
    Rule {
        id: "openssh-private-key",
        category: Secret,
        description: "OpenSSH private key block",
        keywords: &["OPENSSH PRIVATE KEY"],
        regex: r"-----BEGIN OPENSSH PRIVATE KEY-----[A-Za-z0-9+/=\s\\]*?-----END OPENSSH PRIVATE KEY-----",
        validate: None,
        examples_true: &[
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
        ],
        examples_false: &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 deploy-key"],
    },
    Rule {
        id: "private-key-truncated",
        category: Secret,
        description: "Beginning of a PEM or OpenSSH private key block whose END line is cut off",
        keywords: &["PRIVATE KEY-----"],
        // A complete block is longer, so the rules above win it; this one catches a block a
        // log line or an excerpt cut short. The body excludes `--` so it stops before an END.
        regex: r"-----BEGIN (?:(?:RSA|EC|DSA|ENCRYPTED|OPENSSH) )?PRIVATE KEY-----(?:[A-Za-z0-9+/=\s:,\\]|-[A-Za-z0-9])*",
        validate: Some(check::pem_body),
        examples_true: &[
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA3OlHRzHweboupcgINz46mToP8lJicCBMxpCcur+qDmUiH8iZ\nNvzLhQ27bMsgKS2bGvzXn/JAtDqQL62h",
            "key: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\\n",
        ],
        examples_false: &[
            "-----BEGIN RSA PRIVATE KEY-----\n...\n",
            "Look for -----BEGIN PRIVATE KEY----- in the file.",
        ],
    },
    Rule {
        id: "pgp-private-key",
        category: Secret,
        description: "PGP private key block",
        keywords: &["PGP PRIVATE KEY BLOCK"],
        regex: r"-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]*?-----END PGP PRIVATE KEY BLOCK-----",
        validate: None,
        examples_true: &[
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0=\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----",
        ],
        examples_false: &["-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQEN\n-----END PGP PUBLIC KEY BLOCK-----"],
    },
    Rule {
        id: "url-password",
        category: Secret,
        description: "Password in a URL or database connection URL (`scheme://user:pass@host`)",
        keywords: &["://"],
        regex: r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:(?P<v>[^\s/@]+)@[^\s/@]",
        validate: Some(check::password),
        examples_true: &[
            "postgres://app:Zq8v!t2LmR@db.internal:5432/app",
            "DATABASE_URL=mysql://root:s3cr3tPass@127.0.0.1/db",
            "https://deploy:tok3n-value@git.example.com/repo.git",
        ],
        examples_false: &[
            "https://example.com/path?q=1",
            "http://example.com:8080/a@b",
            "postgres://app:${DB_PASSWORD}@db/app",
            "redis://:<redacted:url-password>@cache:6379",
        ],
    },
    Rule {
        id: "connection-string-password",
        category: Secret,
        description: "Password in a key=value database connection string (ADO.NET, ODBC, JDBC)",
        keywords: &["password=", "pwd="],
        regex: r"(?i)\b(?:server|host|data source|address)\s*=[^;]+;(?:[^;]*;)*?\s*(?:password|pwd)\s*=\s*(?P<v>[^;'\x22\s]+)",
        validate: Some(check::password),
        examples_true: &[
            "Server=tcp:db.example.net,1433;Database=app;User ID=app;Password=Zq8v!t2LmR;Encrypt=true",
            "Host=localhost;Username=app;Pwd=hunter2hunter2",
        ],
        examples_false: &["Server=db;Database=app;Integrated Security=true;"],
    },
    Rule {
        id: "generic-secret-assignment",
        category: Secret,
        description: "High-entropy value assigned to a key named like a password, secret or token",
        keywords: &["pass", "pwd", "secret", "token", "api_key", "apikey", "api-key"],
        regex: r#"(?i)[a-z0-9_.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key)[a-z0-9_.-]*["']?\s*(?::=|[:=])\s*["']?(?P<v>[^\s"'`,;]{8,})"#,
        validate: Some(check::high_entropy_value),
        examples_true: &[
            "password = \"UIIiFePsFzb9kqPR\"",
            "{\"client_secret\": \"n7Rq2vXb9LkPz4Wm\"}",
            "API_KEY=Hx9fQ2mLp7RtZ3vK",
        ],
        examples_false: &[
            "password = \"changeme\"",
            "token: aaaaaaaaaaaaaaaa",
            "password = ${DB_PASSWORD}",
            "password: \"<redacted:generic-secret-assignment>\"",
            "session_token_sha = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "\"token_id\": \"123e4567-e89b-12d3-a456-426614174000\"",
        ],
    },
];

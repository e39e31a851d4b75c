//! One row's cells → an [`Invitee`], or every [`Problem`] the row has.
//!
//! Pure functions over strings: no I/O, no knowledge of file formats, and never a
//! panic whatever the cells hold. Messages are for the operator who fixes the sheet.

use email_address::EmailAddress;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

use super::{Columns, Field, Invitee, Problem};
use crate::api::types::AccessStatus;

/// Domains people mistype often enough to catch, with what they meant.
const DOMAIN_TYPOS: &[(&str, &str)] = &[
    ("gmial.com", "gmail.com"),
    ("gmai.com", "gmail.com"),
    ("gmal.com", "gmail.com"),
    ("gamil.com", "gmail.com"),
    ("gnail.com", "gmail.com"),
    ("gmaill.com", "gmail.com"),
    ("gmail.co", "gmail.com"),
    ("gmail.cm", "gmail.com"),
    ("hotmial.com", "hotmail.com"),
    ("hotmal.com", "hotmail.com"),
    ("hotmai.com", "hotmail.com"),
    ("hotmil.com", "hotmail.com"),
    ("homail.com", "hotmail.com"),
    ("hotamil.com", "hotmail.com"),
    ("hotmail.co", "hotmail.com"),
    ("outlok.com", "outlook.com"),
    ("outloo.com", "outlook.com"),
    ("oulook.com", "outlook.com"),
    ("outlook.co", "outlook.com"),
    ("yaho.com", "yahoo.com"),
    ("yahooo.com", "yahoo.com"),
    ("yhoo.com", "yahoo.com"),
    ("iclod.com", "icloud.com"),
    ("icoud.com", "icloud.com"),
    ("icloud.co", "icloud.com"),
    ("btinternet.co", "btinternet.com"),
    ("btinernet.com", "btinternet.com"),
    ("btinterent.com", "btinternet.com"),
];

/// Top-level domains that do not exist and are one slip away from `.com`.
const COM_TYPOS: &[&str] = &["con", "cmo", "ocm", "vom", "xom", "cpm", "comm", "coom"];

/// Validates one row whose cells are aligned to `columns.names`.
pub(crate) fn validate(columns: &Columns, values: &[String]) -> Result<Invitee, Vec<Problem>> {
    let cell = |f: Field| {
        columns
            .index_of(f)
            .and_then(|i| values.get(i))
            .map(String::as_str)
            .unwrap_or("")
    };
    // A column's name is copied only into a problem: a good row allocates none.
    let column = |f: Field| columns.name_of(f);
    let mut problems = Vec::new();

    let email = email_cell(cell(Field::Email), column(Field::Email), &mut problems);

    let name = name_cells(&cell, &column, &mut problems);

    let customer = optional(cell(Field::Customer));
    let customer_reference = optional(cell(Field::CustomerReference));
    let customer_id = whole_number(
        cell(Field::CustomerId),
        column(Field::CustomerId),
        &mut problems,
    );
    let user_id = whole_number(cell(Field::UserId), column(Field::UserId), &mut problems);

    let status = status_cell(cell(Field::Status), column(Field::Status), &mut problems);

    for field in [
        Field::Email,
        Field::Name,
        Field::FirstName,
        Field::LastName,
        Field::Customer,
        Field::CustomerReference,
    ] {
        let column = column(field);
        if !problems.iter().any(|p| p.column.as_deref() == column) {
            problems.extend(character_problem(cell(field), column));
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Invitee {
        email,
        name,
        customer,
        customer_id,
        customer_reference,
        status,
        user_id,
    })
}

/// The person's name: the name column, else first and last name joined; empty is a
/// problem (the invitation needs it).
fn name_cells<'a>(
    cell: &impl Fn(Field) -> &'a str,
    column: &impl Fn(Field) -> Option<&'a str>,
    problems: &mut Vec<Problem>,
) -> String {
    let mut name = collapse(cell(Field::Name));
    if name.is_empty() {
        name = collapse(&format!(
            "{} {}",
            cell(Field::FirstName),
            cell(Field::LastName)
        ));
    }
    if name.is_empty() {
        let col = [Field::Name, Field::FirstName, Field::LastName]
            .into_iter()
            .find_map(column);
        problems.push(Problem {
            column: col.map(str::to_string),
            value: String::new(),
            message: "the name is empty: the invitation needs the person's name".to_string(),
        });
    }
    name
}

/// The status cell: empty is none; anything but a status is a problem.
fn status_cell(
    cell: &str,
    column: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Option<AccessStatus> {
    let text = trim(cell);
    if text.is_empty() {
        return None;
    }
    let parsed = AccessStatus::parse_loose(text);
    if parsed.is_none() {
        problems.push(Problem {
            column: column.map(str::to_string),
            value: text.to_string(),
            message: format!(
                "\"{text}\" is not a status: use active, suspended or \
                 awaitingActivation, or leave it empty"
            ),
        });
    }
    parsed
}

/// The e-mail cell, NFKC-folded (full-width forms become the letters they show); an
/// empty, invisible-character-holding or malformed address is a problem. Only
/// whitespace is trimmed: an invisible character would make another address.
fn email_cell(cell: &str, column: Option<&str>, problems: &mut Vec<Problem>) -> String {
    let typed = cell.trim();
    // ASCII is its own NFKC form and holds no format character: the common case is cheap.
    let ascii = typed.is_ascii();
    let email: String = if ascii {
        typed.to_string()
    } else {
        typed.nfkc().collect()
    };
    let invisible = typed
        .chars()
        .filter(|_| !ascii)
        .find(|c| c.general_category() == GeneralCategory::Format);
    let (value, message) = if let Some(c) = invisible {
        let message = format!(
            "the address holds the invisible character {}: delete it (retype the address) \
             and save the file",
            char_name(c)
        );
        (typed.escape_default().to_string(), message)
    } else if email.is_empty() {
        let message = "the e-mail address is empty: fill it in or remove the row";
        (String::new(), message.to_string())
    } else if let Err(message) = check_email(&email) {
        (email.clone(), message)
    } else {
        return email;
    };
    problems.push(Problem {
        column: column.map(str::to_string),
        value,
        message,
    });
    email
}

/// A control character, or one that could not be decoded, in a cell that is sent.
fn character_problem(value: &str, column: Option<&str>) -> Option<Problem> {
    // ASCII holds no U+FFFD; its control characters are the bytes below a space and DEL.
    if value
        .bytes()
        .all(|b| (b' '..0x7F).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    let control = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    let message = if let Some(c) = control {
        format!(
            "holds the control character U+{:04X}: delete it and save the file",
            u32::from(c)
        )
    } else if value.contains('\u{FFFD}') {
        "has characters that could not be decoded: save the file as UTF-8, or name its \
         encoding with --encoding"
            .to_string()
    } else {
        return None;
    };
    Some(Problem {
        column: column.map(str::to_string),
        value: value.to_string(),
        message,
    })
}

/// The name of an invisible format character, for a message: `U+200B ZERO WIDTH SPACE`.
fn char_name(c: char) -> String {
    let name = match c {
        '\u{00AD}' => "SOFT HYPHEN",
        '\u{061C}' => "ARABIC LETTER MARK",
        '\u{180E}' => "MONGOLIAN VOWEL SEPARATOR",
        '\u{200B}' => "ZERO WIDTH SPACE",
        '\u{200C}' => "ZERO WIDTH NON-JOINER",
        '\u{200D}' => "ZERO WIDTH JOINER",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{202A}'..='\u{202E}' => "BIDIRECTIONAL FORMATTING CHARACTER",
        '\u{2060}' => "WORD JOINER",
        '\u{2061}'..='\u{2064}' => "INVISIBLE OPERATOR",
        '\u{2066}'..='\u{2069}' => "BIDIRECTIONAL ISOLATE",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE (BYTE ORDER MARK)",
        _ => "FORMAT CHARACTER",
    };
    format!("U+{:04X} {name}", u32::from(c))
}

/// What is odd about an invitee who can still be sent: an address whose letters come
/// from more than one script, like a Cyrillic `а` among Latin letters.
pub(crate) fn warnings(columns: &Columns, who: &Invitee) -> Vec<Problem> {
    if who.email.is_ascii() {
        return Vec::new();
    }
    let mut scripts: Vec<(Script, char)> = Vec::new();
    for c in who.email.chars() {
        let script = c.script();
        if !matches!(script, Script::Common | Script::Inherited | Script::Unknown)
            && !scripts.iter().any(|(s, _)| *s == script)
        {
            scripts.push((script, c));
        }
    }
    if scripts.len() < 2 {
        return Vec::new();
    }
    let list: Vec<String> = scripts
        .iter()
        .map(|(s, c)| format!("{} ('{c}' U+{:04X})", s.full_name(), u32::from(*c)))
        .collect();
    vec![Problem {
        column: columns.name_of(Field::Email).map(str::to_string),
        value: who.email.clone(),
        message: format!(
            "the address \"{}\" mixes scripts: {}; letters that look alike make another \
             address, so check it is the one meant",
            who.email,
            list.join(", ")
        ),
    }]
}

/// Trims whitespace and the invisible characters spreadsheets leave behind.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}' || c == '\u{200B}')
}

/// Trims and folds every run of whitespace inside to one space.
fn collapse(s: &str) -> String {
    let trimmed = trim(s);
    let mut out = String::with_capacity(trimmed.len());
    for word in trimmed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn optional(s: &str) -> Option<String> {
    let s = trim(s);
    (!s.is_empty()).then(|| s.to_string())
}

/// Reads an id: a positive integer, also as a spreadsheet writes it (`123.0`).
fn whole_number(s: &str, column: Option<&str>, problems: &mut Vec<Problem>) -> Option<i64> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let digits = match s.split_once('.') {
        Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
        _ => s,
    };
    match digits.strip_prefix('+').unwrap_or(digits).parse::<i64>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit() || b == b'+') => Some(n),
        _ => {
            problems.push(Problem {
                column: column.map(str::to_string),
                value: s.to_string(),
                message: format!(
                    "\"{s}\" is not an id: write a whole number such as 1234, or leave it empty"
                ),
            });
            None
        }
    }
}

/// Why `email` is not an address we should invite, worded for the person fixing it.
fn check_email(email: &str) -> Result<(), String> {
    let invalid = |reason: &str| {
        Err(format!(
            "\"{email}\" is not a valid e-mail address: {reason}; correct it in the file"
        ))
    };
    if email.chars().any(char::is_whitespace) {
        return invalid("it contains a space");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return invalid("it has no @");
    };
    if local.contains('@') {
        return invalid("it has more than one @ (one address per cell)");
    }
    if local.is_empty() {
        return invalid("nothing comes before the @");
    }
    if domain.is_empty() {
        return invalid("nothing comes after the @");
    }
    if email.contains("..") {
        return invalid("it has two dots in a row");
    }
    if !domain.contains('.') {
        return invalid(&format!(
            "the domain \"{domain}\" has no dot (expected something like example.com)"
        ));
    }
    if !plain_address(local, domain)
        && let Err(e) = EmailAddress::parse_with_options(email, crate_options())
    {
        return invalid(&e.to_string().to_lowercase());
    }
    if let Some(meant) = domain_typo(domain) {
        return Err(format!(
            "\"{email}\" looks mistyped: did you mean {local}@{meant}? correct it in the file"
        ));
    }
    Ok(())
}

/// What the `email_address` crate is asked to accept: a plain address with a top-level
/// domain, no display name, no IP literal.
fn crate_options() -> email_address::Options {
    email_address::Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal()
}

/// An address of the common shape, which the `email_address` crate accepts with the
/// options above (a test checks that): letters, digits and `._+-` before the @ (no dot
/// first or last), two or more labels of letters, digits and inner hyphens after it,
/// within the lengths it allows. Anything else is left to the crate.
fn plain_address(local: &str, domain: &str) -> bool {
    let local_ok = (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        && local.split('.').all(|atom| !atom.is_empty());
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    local_ok && domain.len() <= 254 && domain.contains('.') && domain.split('.').all(label_ok)
}

/// The domain someone most likely meant, when `domain` is a known slip.
fn domain_typo(domain: &str) -> Option<String> {
    if domain.is_ascii() {
        // Nearly every domain: compared without a lower-cased copy.
        let tld = domain.rsplit_once('.').map(|(_, tld)| tld);
        let typo = DOMAIN_TYPOS
            .iter()
            .any(|(t, _)| domain.eq_ignore_ascii_case(t))
            || tld.is_some_and(|tld| COM_TYPOS.iter().any(|t| tld.eq_ignore_ascii_case(t)));
        if !typo {
            return None;
        }
    }
    let lower = domain.to_lowercase();
    if let Some((_, meant)) = DOMAIN_TYPOS.iter().find(|(typo, _)| *typo == lower) {
        return Some((*meant).to_string());
    }
    let (stem, tld) = lower.rsplit_once('.')?;
    COM_TYPOS.contains(&tld).then(|| format!("{stem}.com"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn columns(names: &[&str]) -> Columns {
        Columns::assign(names.iter().map(|s| s.to_string()).collect(), &[]).0
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    fn messages(r: Result<Invitee, Vec<Problem>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_good_row_becomes_an_invitee() {
        let c = columns(&[
            "Email",
            "Name",
            "Company",
            "Customer ID",
            "Reference",
            "Status",
            "ID",
        ]);
        let inv = validate(
            &c,
            &row(&[
                "  Jane.Doe@Example.com ",
                " Jane \t  Doe ",
                " Acme Ltd ",
                "42.0",
                "ACME-1",
                "Awaiting Activation",
                "7",
            ]),
        )
        .unwrap();
        assert_eq!(
            inv,
            Invitee {
                email: "Jane.Doe@Example.com".to_string(),
                name: "Jane Doe".to_string(),
                customer: Some("Acme Ltd".to_string()),
                customer_id: Some(42),
                customer_reference: Some("ACME-1".to_string()),
                status: Some(AccessStatus::AwaitingActivation),
                user_id: Some(7),
            }
        );
    }

    #[test]
    fn empty_optionals_are_none() {
        let c = columns(&["Email", "Name", "Company", "Customer ID", "Status"]);
        let inv = validate(&c, &row(&["a@b.co", "A", " ", "", ""])).unwrap();
        assert_eq!(inv.customer, None);
        assert_eq!(inv.customer_id, None);
        assert_eq!(inv.status, None);
    }

    #[test]
    fn first_and_last_are_joined_when_name_is_empty() {
        let c = columns(&["Email", "Name", "First Name", "Surname"]);
        let inv = validate(&c, &row(&["a@b.co", "", " Ana ", "García  López"])).unwrap();
        assert_eq!(inv.name, "Ana García López");
        let inv = validate(&c, &row(&["a@b.co", "Ana G.", "Ana", "García"])).unwrap();
        assert_eq!(inv.name, "Ana G.");
        let inv = validate(&c, &row(&["a@b.co", "", "", "García"])).unwrap();
        assert_eq!(inv.name, "García");
    }

    #[test]
    fn every_problem_of_a_row_is_reported() {
        let c = columns(&["Email", "Name", "Customer ID", "Status", "ID"]);
        let m = messages(validate(&c, &row(&["", "", "abc", "pending", "-3"])));
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(
            m[0],
            "Email: the e-mail address is empty: fill it in or remove the row"
        );
        assert_eq!(
            m[1],
            "Name: the name is empty: the invitation needs the person's name"
        );
        assert_eq!(
            m[2],
            "Customer ID: \"abc\" is not an id: write a whole number such as 1234, or leave it empty"
        );
        assert_eq!(
            m[3],
            "ID: \"-3\" is not an id: write a whole number such as 1234, or leave it empty"
        );
        assert_eq!(
            m[4],
            "Status: \"pending\" is not a status: use active, suspended or awaitingActivation, \
             or leave it empty"
        );
    }

    #[test]
    fn ids_accept_spreadsheet_floats_only_when_whole() {
        let mut p = Vec::new();
        assert_eq!(whole_number("123", None, &mut p), Some(123));
        assert_eq!(whole_number("123.0", None, &mut p), Some(123));
        assert_eq!(whole_number("+5", None, &mut p), Some(5));
        assert!(p.is_empty());
        for bad in [
            "12.5",
            "1e3",
            "0",
            "1,234",
            "12.",
            "99999999999999999999",
            "١٢",
        ] {
            let mut p = Vec::new();
            assert_eq!(whole_number(bad, None, &mut p), None, "{bad}");
            assert_eq!(p.len(), 1, "{bad}");
        }
    }

    #[test]
    fn email_reasons() {
        let reason = |e: &str| check_email(e).unwrap_err();
        assert!(check_email("jane.doe+tag@example.co.uk").is_ok());
        assert!(reason("jane doe@example.com").contains("contains a space"));
        assert!(reason("jane.example.com").contains("has no @"));
        assert!(reason("a@b@example.com").contains("more than one @"));
        assert!(reason("@example.com").contains("nothing comes before"));
        assert!(reason("jane@").contains("nothing comes after"));
        assert!(reason("jane..doe@example.com").contains("two dots in a row"));
        assert!(reason("jane@example..com").contains("two dots in a row"));
        assert!(reason("jane@localhost").contains("has no dot"));
        assert!(reason("jane@-example.com").starts_with("\"jane@-example.com\" is not a valid"));
        assert!(reason("Jane <jane@example.com>").contains("space"));
        assert!(reason("<jane@example.com>").starts_with("\"<jane@example.com>\" is not a valid"));
    }

    #[test]
    fn domain_typos_get_a_suggestion() {
        assert_eq!(
            check_email("jane@gmial.com").unwrap_err(),
            "\"jane@gmial.com\" looks mistyped: did you mean jane@gmail.com? correct it in the file"
        );
        assert!(
            check_email("Jo@GMAIL.CON")
                .unwrap_err()
                .contains("Jo@gmail.com")
        );
        assert!(
            check_email("jo@hotmial.com")
                .unwrap_err()
                .contains("jo@hotmail.com")
        );
        assert!(
            check_email("jo@outlok.com")
                .unwrap_err()
                .contains("jo@outlook.com")
        );
        assert!(
            check_email("jo@acme.co.con")
                .unwrap_err()
                .contains("jo@acme.co.com")
        );
        assert!(check_email("jo@gmail.com").is_ok());
        assert!(check_email("jo@acme.co").is_ok());
    }

    #[test]
    fn undecodable_characters_are_a_problem() {
        let c = columns(&["Email", "Name"]);
        let m = messages(validate(&c, &row(&["a@b.co", "Jos\u{FFFD}"])));
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("--encoding"), "{m:?}");
    }

    #[test]
    fn invisible_characters_in_an_address_are_named() {
        let c = columns(&["Email", "Name"]);
        for (email, named) in [
            ("an\u{200B}n@example.com", "U+200B ZERO WIDTH SPACE"),
            ("ann@exam\u{AD}ple.com", "U+00AD SOFT HYPHEN"),
            ("\u{2060}ann@example.com", "U+2060 WORD JOINER"),
            ("ann@example.com\u{E0001}", "U+E0001 FORMAT CHARACTER"),
        ] {
            let m = messages(validate(&c, &row(&[email, "Ann"])));
            assert_eq!(m.len(), 1, "{m:?}");
            assert!(m[0].contains(named), "{m:?}");
        }
    }

    #[test]
    fn control_characters_make_a_row_invalid() {
        let c = columns(&["Email", "Name", "Company"]);
        let m = messages(validate(&c, &row(&["a@b.co", "Ann", "Acme\u{1b}[31m"])));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("U+001B"), "{m:?}");
        assert!(validate(&c, &row(&["a@b.co", "Ann\nLee", "Acme"])).is_ok());
    }

    #[test]
    fn full_width_addresses_fold_to_what_they_show() {
        let c = columns(&["Email", "Name"]);
        let who = validate(&c, &row(&["ａｎｎ@ｅｘａｍｐｌｅ.com", "Ann"])).unwrap();
        assert_eq!(who.email, "ann@example.com");
    }

    #[test]
    fn an_address_mixing_scripts_is_a_warning() {
        let c = columns(&["Email", "Name"]);
        let who = validate(&c, &row(&["p\u{430}ul@example.com", "Paul"])).unwrap();
        let w = warnings(&c, &who);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].message.contains("Latin") && w[0].message.contains("Cyrillic ('а' U+0430)"),
            "{w:?}"
        );
        assert_eq!(w[0].column.as_deref(), Some("Email"));
        for plain in [
            "paul@example.com",
            "пётр@пример.рф",
            "zoë.müller@example.de",
        ] {
            let who = validate(&c, &row(&[plain, "P"])).unwrap();
            assert!(warnings(&c, &who).is_empty(), "{plain}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The shortcut for common addresses accepts only what the crate accepts.
        #[test]
        fn a_plain_address_is_one_the_crate_accepts(
            local in "[a-zA-Z0-9._+\\-]{0,70}|[ -~]{0,8}",
            domain in "[a-zA-Z0-9.\\-]{0,80}|([a-z0-9\\-]{0,64}\\.){1,4}[a-z0-9\\-]{0,64}|[ -~]{0,8}",
        ) {
            if plain_address(&local, &domain) {
                let email = format!("{local}@{domain}");
                let parsed = EmailAddress::parse_with_options(&email, crate_options());
                proptest::prop_assert!(parsed.is_ok(), "{email}: {parsed:?}");
            }
        }

        /// Domains are matched against the known slips without regard to case, as before.
        #[test]
        fn domain_slips_are_found_in_any_case(
            stem in "[a-zA-Z]{1,8}",
            typo in proptest::sample::select(DOMAIN_TYPOS.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
            tld in proptest::sample::select(COM_TYPOS.to_vec()),
            upper in proptest::collection::vec(proptest::bool::ANY, 16),
        ) {
            let shout = |s: &str| -> String {
                s.chars()
                    .zip(upper.iter().cycle())
                    .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c })
                    .collect()
            };
            let meant = DOMAIN_TYPOS.iter().find(|(t, _)| *t == typo).map(|(_, m)| m.to_string());
            proptest::prop_assert_eq!(domain_typo(&shout(typo)), meant);
            let com = format!("{}.com", stem.to_lowercase());
            proptest::prop_assert_eq!(domain_typo(&shout(&format!("{stem}.{tld}"))), Some(com));
            proptest::prop_assert_eq!(domain_typo(&format!("{stem}.com")), None);
        }
    }

    #[test]
    fn plain_addresses_are_checked_like_any_other() {
        for (email, ok) in [
            ("ann.lee+news@mail.example.co.uk", true),
            ("a@b.co", true),
            (".ann@example.com", false),
            ("ann.@example.com", false),
            ("ann@-example.com", false),
            ("ann@example-.com", false),
            ("ann@example.c(m", false),
            ("ann@example.c_m", true),
            (&format!("{}@example.com", "a".repeat(65)), false),
            (&format!("ann@{}.com", "b".repeat(64)), false),
        ] {
            assert_eq!(check_email(email).is_ok(), ok, "{email}");
        }
    }
}

//! Which header column holds which field: loose name matching, aliases, `--map`.
//!
//! Works on header names only; never looks at row values and never decides whether a
//! file is usable (that is `open`'s call, which turns a missing field into an error).

use std::fmt;
use std::str::FromStr;

use super::results;

/// A field the pipeline understands. Every other column is carried through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Email,
    Name,
    FirstName,
    LastName,
    Customer,
    CustomerId,
    CustomerReference,
    Status,
    UserId,
}

impl Field {
    /// Every field, in the order aliases are matched.
    pub const ALL: [Field; 9] = [
        Field::Email,
        Field::Name,
        Field::FirstName,
        Field::LastName,
        Field::Customer,
        Field::CustomerId,
        Field::CustomerReference,
        Field::Status,
        Field::UserId,
    ];

    /// The name used on the command line (`--map email=…`) and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::Name => "name",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Customer => "customer",
            Field::CustomerId => "customer_id",
            Field::CustomerReference => "customer_reference",
            Field::Status => "status",
            Field::UserId => "id",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    /// Normalized header names that mean this field without a `--map`.
    ///
    /// "username" is deliberately absent: in exports it is usually a login, not a
    /// person's name.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::Email => &[
                "email",
                "emailaddress",
                "mail",
                "useremail",
                "contactemail",
                "emailid",
            ],
            Field::Name => &[
                "name",
                "fullname",
                "contactname",
                "displayname",
                "invitee",
                "person",
            ],
            Field::FirstName => &["firstname", "first", "givenname", "forename"],
            Field::LastName => &["lastname", "last", "surname", "familyname"],
            Field::Customer => &[
                "customer",
                "customername",
                "company",
                "companyname",
                "account",
                "accountname",
                "organisation",
                "organization",
                "organisationname",
                "organizationname",
                "client",
                "clientname",
                "business",
            ],
            Field::CustomerId => &["customerid", "accountid", "clientid", "custid"],
            Field::CustomerReference => &[
                "customerreference",
                "customerref",
                "reference",
                "ref",
                "accountreference",
                "accountref",
                "accountnumber",
                "accountno",
                "customernumber",
                "customerno",
            ],
            Field::Status => &["status", "accessstatus", "userstatus"],
            Field::UserId => &["id", "userid", "accessid", "accessuserid"],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--map` field name that is not one of [`Field::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown field \"{0}\": use email, name, first_name, last_name, customer, customer_id, \
     customer_reference, status or id"
)]
pub struct UnknownField(pub String);

impl FromStr for Field {
    type Err = UnknownField;

    /// Reads a field name loosely: case, `-`, `_` and spaces are ignored.
    fn from_str(s: &str) -> Result<Field, UnknownField> {
        let field = match normalize_header(s).as_str() {
            "email" => Field::Email,
            "name" => Field::Name,
            "firstname" => Field::FirstName,
            "lastname" => Field::LastName,
            "customer" => Field::Customer,
            "customerid" => Field::CustomerId,
            "customerreference" => Field::CustomerReference,
            "status" => Field::Status,
            "id" | "userid" => Field::UserId,
            _ => return Err(UnknownField(s.to_string())),
        };
        Ok(field)
    }
}

/// The loose form of a header name used for matching: lower-case letters and digits
/// only, so `E-mail Address`, `email_address` and `EMAIL.ADDRESS` all read
/// `emailaddress`.
///
/// `#` reads as "number" rather than vanishing, so `Account #` is an account number
/// and not an account name.
pub fn normalize_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '#' {
            out.push_str("number");
        } else if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The header of an input, and which of its columns holds each [`Field`].
#[derive(Debug, PartialEq, Eq)]
pub struct Columns {
    /// The header as in the file, in order; for a results sheet of bbinvite's, its
    /// input's own columns only, unescaped.
    pub names: Vec<String>,
    index: [Option<usize>; Field::ALL.len()],
    /// How many outcome columns of a results sheet followed `names` in the file (0 for
    /// any other input); their cells are dropped from every row.
    pub(crate) outcome: usize,
}

impl Columns {
    /// Matches `names` against `--map` overrides first, then aliases; first match in
    /// column order wins and a column serves one field at most.
    ///
    /// Returns the columns and the first `--map` entry whose column is not in `names`.
    pub(crate) fn assign(
        mut names: Vec<String>,
        map: &[(Field, String)],
    ) -> (Columns, Option<usize>) {
        // A results sheet (`--results`, `export`) fed back in: its trailing outcome
        // columns describe the last run, not the invitee, so they are dropped, and its
        // cells are unescaped to what the user typed.
        let outcome = results::outcome_block(&names);
        if outcome > 0 {
            names.truncate(names.len() - outcome);
            names.iter_mut().for_each(results::unescape);
        }
        let normalized: Vec<String> = names.iter().map(|n| normalize_header(n)).collect();
        let mut index = [None; Field::ALL.len()];
        let mut claimed = vec![false; names.len()];
        let mut missing = None;

        for (i, (field, column)) in map.iter().enumerate() {
            let wanted = normalize_header(column);
            let found = names
                .iter()
                .position(|n| n == column)
                .or_else(|| names.iter().position(|n| n.trim() == column.trim()))
                .or_else(|| {
                    normalized
                        .iter()
                        .position(|n| !wanted.is_empty() && *n == wanted)
                });
            match found {
                Some(col) => {
                    index[field.slot()] = Some(col);
                    claimed[col] = true;
                }
                None => {
                    missing.get_or_insert(i);
                }
            }
        }

        for field in Field::ALL {
            if index[field.slot()].is_some() || map.iter().any(|(f, _)| *f == field) {
                continue;
            }
            let aliases = field.aliases();
            let found = normalized
                .iter()
                .enumerate()
                .find(|(col, n)| !claimed[*col] && aliases.contains(&n.as_str()))
                .map(|(col, _)| col);
            if let Some(col) = found {
                index[field.slot()] = Some(col);
                claimed[col] = true;
            }
        }

        (
            Columns {
                names,
                index,
                outcome,
            },
            missing,
        )
    }

    /// Whether some column holds `f`.
    pub fn has(&self, f: Field) -> bool {
        self.index[f.slot()].is_some()
    }

    /// The header name of the column that holds `f`, as written in the file.
    pub fn name_of(&self, f: Field) -> Option<&str> {
        self.index_of(f)
            .and_then(|i| self.names.get(i))
            .map(String::as_str)
    }

    /// Whether the column at `index` holds one of the fields (rather than being carried).
    pub(crate) fn is_field(&self, index: usize) -> bool {
        self.index.contains(&Some(index))
    }

    /// The position of the column that holds `f`.
    pub fn index_of(&self, f: Field) -> Option<usize> {
        self.index[f.slot()]
    }

    /// A column that probably holds `f` although no alias matched, to show in the
    /// `--map` hint of an error message.
    pub(crate) fn guess(&self, f: Field) -> Option<&str> {
        let hint = match f {
            Field::Email => "mail",
            _ => "name",
        };
        let taken: Vec<usize> = self.index.iter().flatten().copied().collect();
        let free = || {
            self.names
                .iter()
                .enumerate()
                .filter(|(i, n)| !taken.contains(i) && !n.trim().is_empty())
        };
        free()
            .find(|(_, n)| normalize_header(n).contains(hint))
            .or_else(|| free().next())
            .map(|(_, n)| n.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::results::RESULTS_COLUMNS;
    use super::*;
    use crate::input::testutil::names;

    #[test]
    fn normalize_drops_case_and_punctuation() {
        assert_eq!(normalize_header("E-mail Address"), "emailaddress");
        assert_eq!(normalize_header(" first_name "), "firstname");
        assert_eq!(normalize_header("Cust.ID"), "custid");
        assert_eq!(normalize_header("Account #"), "accountnumber");
        assert_eq!(normalize_header("Société"), "société");
    }

    #[test]
    fn field_parses_loosely() {
        assert_eq!("E-Mail".parse::<Field>().unwrap(), Field::Email);
        assert_eq!("first-name".parse::<Field>().unwrap(), Field::FirstName);
        assert_eq!("CUSTOMER_ID".parse::<Field>().unwrap(), Field::CustomerId);
        assert_eq!("user_id".parse::<Field>().unwrap(), Field::UserId);
        assert_eq!("id".parse::<Field>().unwrap(), Field::UserId);
        assert!("username".parse::<Field>().is_err());
        for f in Field::ALL {
            assert_eq!(f.as_str().parse::<Field>().unwrap(), f);
        }
    }

    #[test]
    fn aliases_match_common_headers() {
        let (c, missing) = Columns::assign(
            names(&[
                "E-mail Address",
                "Full Name",
                "Company",
                "Account #",
                "Cust ID",
                "Access Status",
                "User ID",
                "Notes",
            ]),
            &[],
        );
        assert_eq!(missing, None);
        assert_eq!(c.name_of(Field::Email), Some("E-mail Address"));
        assert_eq!(c.name_of(Field::Name), Some("Full Name"));
        assert_eq!(c.name_of(Field::Customer), Some("Company"));
        assert_eq!(c.name_of(Field::CustomerReference), Some("Account #"));
        assert_eq!(c.name_of(Field::CustomerId), Some("Cust ID"));
        assert_eq!(c.name_of(Field::Status), Some("Access Status"));
        assert_eq!(c.name_of(Field::UserId), Some("User ID"));
        assert!(!c.has(Field::FirstName));
    }

    #[test]
    fn a_results_sheet_fed_back_is_read_by_its_own_columns() {
        let mut header = names(&["E-mail", "Full Name", "Company"]);
        header.extend(RESULTS_COLUMNS.iter().map(|s| s.to_string()));
        let (c, _) = Columns::assign(header, &[]);
        assert_eq!(c.names, ["E-mail", "Full Name", "Company"]);
        assert_eq!(c.outcome, RESULTS_COLUMNS.len());
        assert_eq!(c.name_of(Field::Email), Some("E-mail"));
        assert_eq!(c.name_of(Field::Customer), Some("Company"));
        assert!(
            !c.has(Field::Status),
            "the outcome status is not an access status"
        );
        assert!(!c.has(Field::CustomerId));
        assert!(!c.has(Field::UserId));
        // A lone `status` column is still the access status.
        let (c, _) = Columns::assign(names(&["email", "name", "status"]), &[]);
        assert!(c.has(Field::Status));
    }

    #[test]
    fn username_is_not_a_name() {
        let (c, _) = Columns::assign(names(&["email", "Username"]), &[]);
        assert!(!c.has(Field::Name));
    }

    #[test]
    fn first_match_in_column_order_wins() {
        let (c, _) = Columns::assign(names(&["Mail", "Email", "Name"]), &[]);
        assert_eq!(c.index_of(Field::Email), Some(0));
    }

    #[test]
    fn map_wins_over_aliases_and_claims_its_column() {
        let map = vec![
            (Field::Email, "work mail".to_string()),
            (Field::Name, "Account".to_string()),
        ];
        let (c, missing) =
            Columns::assign(names(&["Email", "Work Mail", "Account", "Company"]), &map);
        assert_eq!(missing, None);
        assert_eq!(c.name_of(Field::Email), Some("Work Mail"));
        assert_eq!(c.name_of(Field::Name), Some("Account"));
        // "Account" is taken by the map, so customer falls to the next alias.
        assert_eq!(c.name_of(Field::Customer), Some("Company"));
    }

    #[test]
    fn map_to_an_absent_column_is_reported() {
        let map = vec![
            (Field::Name, "Name".to_string()),
            (Field::Email, "Nope".to_string()),
        ];
        let (_, missing) = Columns::assign(names(&["Email", "Name"]), &map);
        assert_eq!(missing, Some(1));
    }

    #[test]
    fn guess_prefers_a_mail_looking_column() {
        let (c, _) = Columns::assign(names(&["Name", "Contact", "Mail Adr 1"]), &[]);
        assert_eq!(c.guess(Field::Email), Some("Mail Adr 1"));
    }
}

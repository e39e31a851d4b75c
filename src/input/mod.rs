//! stub, replaced by the real readers
#![allow(dead_code, unused_variables, missing_docs)]
use crate::api::types::AccessStatus;
use std::sync::Arc;
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
impl std::str::FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Field::Email)
    }
}
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub delimiter: Option<u8>,
    pub encoding: Option<String>,
    pub sheet: Option<String>,
    pub format: Option<Format>,
    pub map: Vec<(Field, String)>,
}
#[derive(Debug, Clone, Copy)]
pub enum Format {
    Csv,
    Jsonl,
    Sheet,
}
pub fn open(path: &str, opts: &Options) -> Result<Reader, Error> {
    Err(Error::X)
}
pub struct Reader {
    file: Arc<str>,
    columns: Arc<Columns>,
}
impl Reader {
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }
    pub fn columns(&self) -> &Arc<Columns> {
        &self.columns
    }
}
impl Iterator for Reader {
    type Item = Result<Record, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        None
    }
}
#[derive(Debug)]
pub struct Columns {
    pub names: Vec<String>,
}
impl Columns {
    pub fn has(&self, f: Field) -> bool {
        false
    }
    pub fn name_of(&self, f: Field) -> Option<&str> {
        None
    }
}
#[derive(Debug, Clone)]
pub struct Record {
    pub file: Arc<str>,
    pub line: u64,
    pub columns: Arc<Columns>,
    pub values: Vec<String>,
    pub parsed: Result<Invitee, Vec<Problem>>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Invitee {
    pub email: String,
    pub name: String,
    pub customer: Option<String>,
    pub customer_id: Option<i64>,
    pub customer_reference: Option<String>,
    pub status: Option<AccessStatus>,
    pub user_id: Option<i64>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub column: Option<String>,
    pub value: String,
    pub message: String,
}
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("x")]
    X,
}

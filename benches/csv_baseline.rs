//! The floor for reading an input: count the records of a CSV with the csv crate alone,
//! touching every field. `benches/bench.py` compares `bbinvite validate` against it.
//!
//! Usage: `cargo bench --bench csv_baseline -- FILE`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // cargo bench passes `--bench`; the file is the first argument that is not a flag.
    let Some(path) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: csv_baseline FILE");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(&path)?;
    let mut record = csv::StringRecord::new();
    let (mut rows, mut bytes) = (0u64, 0usize);
    while reader.read_record(&mut record)? {
        rows += 1;
        bytes += record.iter().map(str::len).sum::<usize>();
    }
    println!(
        "{{\"rows\": {rows}, \"field_bytes\": {bytes}, \"secs\": {:.3}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

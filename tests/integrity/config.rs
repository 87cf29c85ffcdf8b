//! Configuration bounds: weights, ramps, bytes, duplicate keys, and many pairs.

use distill::config::{Config, ConfigError};
use distill::schedule::Schedule;
use distill::DistillError;

use crate::temp_dir;

fn pair(weight: &str) -> String {
    format!("[[pair]]\nname = \"kd\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nweight = {weight}\n")
}

fn located(error: DistillError) -> (usize, usize, String) {
    match &error {
        DistillError::Config(ConfigError { line, column, .. }) => (*line, *column, error.to_string()),
        other => panic!("not a located configuration error: {other}"),
    }
}

#[test]
fn a_negative_weight_is_refused_at_its_line() {
    let (line, _, message) = located(Config::parse(&pair("-1"), "kd.toml").unwrap_err());
    assert_eq!(line, 6);
    assert!(message.contains("≥ 0") && message.contains("-1"), "{message}");
    let schedule = pair("{ kind = \"linear\", from = 1.0, to = -0.5, start = 0, end = 10 }");
    let (line, _, message) = located(Config::parse(&schedule, "kd.toml").unwrap_err());
    assert_eq!(line, 6);
    assert!(message.contains("-0.5"), "{message}");
    Config::parse(&pair("0"), "kd.toml").unwrap();
}

#[test]
fn a_ramp_whose_values_overflow_is_refused_by_validate() {
    let ramp = Schedule::linear(-1e308, 1e308, 0, 10);
    // Before, the middle of this ramp was infinite.
    assert!(ramp.validate().unwrap_err().contains("infinite"));
    let product = Schedule::constant(1e200) * Schedule::constant(1e200);
    assert!(product.validate().unwrap_err().contains("infinite"));
    Schedule::linear(-1e300, 1e300, 0, 10).validate().unwrap();
    let text = pair("{ kind = \"linear\", from = 0.0, to = 1e308, start = 0, end = 10 }")
        .replace("from = 0.0", "from = -1e308");
    let (_, _, message) = located(Config::parse(&text, "kd.toml").unwrap_err());
    assert!(message.contains("infinite"), "{message}");
}

#[test]
fn a_byte_that_is_not_utf8_is_reported_at_its_line_and_column() {
    let dir = temp_dir("not-utf8");
    let file = dir.join("kd.toml");
    let mut bytes = pair("0.5").into_bytes();
    // `student = "\xff"` on line 3, column 12.
    let at = bytes.windows(9).position(|w| w == b"student =").unwrap() + 11;
    bytes.insert(at, 0xff);
    std::fs::write(&file, bytes).unwrap();
    let (line, column, message) = located(Config::from_file(&file).unwrap_err());
    assert_eq!((line, column), (3, 12), "{message}");
    assert!(message.contains("0xff") && message.contains("UTF-8"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_duplicate_key_is_named() {
    let text = pair("0.5") + "criterion = \"L1\"\n";
    let (line, _, message) = located(Config::parse(&text, "kd.toml").unwrap_err());
    assert_eq!(line, 7);
    assert!(message.contains("duplicate key `criterion`"), "{message}");
}

#[test]
fn a_hundred_thousand_pairs_are_read() {
    // Every pair's name is compared once with those before it: this took quadratic time (over a
    // minute for 100 000 pairs); now each name is looked up once.
    let pairs = |count: usize| {
        let mut text = String::with_capacity(count * 100);
        for i in 0..count {
            text.push_str(&format!(
                "[[pair]]\nname = \"p{i}\"\nstudent = \"features.{i}\"\nteacher = \"features.{i}\"\ncriterion = \"Mse\"\n"
            ));
        }
        text
    };
    let count = 100_000;
    let (half, text) = (pairs(count / 2), pairs(count));
    let started = std::time::Instant::now();
    Config::parse(&half, "half.toml").unwrap();
    let half_time = started.elapsed();
    let started = std::time::Instant::now();
    let config = Config::parse(&text, "many.toml").unwrap();
    let time = started.elapsed();
    // Printed, not asserted (timings depend on the machine): linear reading gives a ratio near 2.
    println!(
        "{count} pairs ({} MB) read in {time:.2?}, {} in {half_time:.2?}: ratio {:.2}",
        text.len() / 1_000_000,
        count / 2,
        time.as_secs_f64() / half_time.as_secs_f64()
    );
    assert_eq!(config.names().len(), count);
    assert_eq!(config.names().last(), Some("p99999"));
    let duplicate = text.clone() + "[[pair]]\nname = \"p5\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\n";
    let (_, _, message) = located(Config::parse(&duplicate, "many.toml").unwrap_err());
    assert!(message.contains("already pair 5's"), "{message}");
}

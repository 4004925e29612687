//! Reading a password for `influx-ha hash-password`: from a prompt on the terminal (echo off,
//! asked twice), or the first line of standard input when it is not a terminal. Never from the
//! command line, where other users and shell histories can read it.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::{Command, Stdio};

/// Why no password was read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Reading failed.
    #[error("cannot read the password: {0}")]
    Io(#[from] io::Error),
    /// Nothing was given.
    #[error("the password is empty")]
    Empty,
    /// The two prompts got different answers.
    #[error("the passwords do not match")]
    Mismatch,
}

/// Reads the password to hash.
pub fn read_password() -> Result<Vec<u8>, InputError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut line = Vec::new();
        stdin.lock().read_until(b'\n', &mut line)?;
        return non_empty(trim_line_end(line));
    }
    let first = prompt("Password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(InputError::Mismatch);
    }
    non_empty(first)
}

fn non_empty(p: Vec<u8>) -> Result<Vec<u8>, InputError> {
    if p.is_empty() {
        Err(InputError::Empty)
    } else {
        Ok(p)
    }
}

fn trim_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// Prompts on stderr with the terminal's echo off (through `stty`, which acts on the
/// terminal it gets as standard input), and turns echo back on whatever happens.
fn prompt(text: &str) -> Result<Vec<u8>, InputError> {
    let mut err = io::stderr();
    write!(err, "{text}")?;
    err.flush()?;
    let echo_off = stty("-echo");
    let mut line = Vec::new();
    let read = io::stdin().lock().read_until(b'\n', &mut line);
    if echo_off {
        stty("echo");
    }
    writeln!(err)?;
    read?;
    Ok(trim_line_end(line))
}

fn stty(arg: &str) -> bool {
    Command::new("stty")
        .arg(arg)
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_not_part_of_the_password() {
        assert_eq!(trim_line_end(b"pw\n".to_vec()), b"pw");
        assert_eq!(trim_line_end(b"pw\r\n".to_vec()), b"pw");
        assert_eq!(trim_line_end(b"pw".to_vec()), b"pw");
        assert_eq!(trim_line_end(b" pw \n".to_vec()), b" pw ");
        assert!(matches!(non_empty(Vec::new()), Err(InputError::Empty)));
    }
}

//! The last lines of a job's stderr, bounded.

/// A bounded ring of the last stderr lines: at most `max_lines` lines and
/// `max_bytes` bytes in total; a line longer than `max_bytes` is truncated
/// (on a character boundary).
#[derive(Debug, Clone, Default)]
pub struct StderrRing {
    pub(super) lines: std::collections::VecDeque<String>,
    pub(super) bytes: usize,
    pub(super) max_lines: usize,
    pub(super) max_bytes: usize,
}

impl StderrRing {
    /// An empty ring with the given bounds.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        StderrRing {
            lines: std::collections::VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// Appends a line (without its newline), evicting the oldest as needed.
    pub fn push(&mut self, line: &str) {
        if self.max_lines == 0 || self.max_bytes == 0 {
            return;
        }
        let mut end = line.len().min(self.max_bytes);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        while !self.lines.is_empty()
            && (self.lines.len() >= self.max_lines || self.bytes + line.len() > self.max_bytes)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_string());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

//! The difference categories of CONTRACT.md.

use std::fmt;
use std::str::FromStr;

/// Where one reconciled record (or pair of records) lands. Every input record lands in
/// exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// On both sides, amounts equal within tolerance, statuses agree.
    Matched,
    /// On both sides, amounts differ.
    AmountMismatch,
    /// On both sides, statuses disagree.
    StatusMismatch,
    /// On both sides, amounts agree but the channel's fee is not the contracted one.
    FeeMismatch,
    /// The platform has it, the channel does not.
    MissingInChannel,
    /// The channel has it, the platform does not.
    MissingInPlatform,
    /// One-sided within the daily-cut window: carried to the next day.
    CrossDayPending,
    /// A record carried from an earlier day that matched today.
    CrossDayMatched,
    /// An extra occurrence of a key in the channel's bill.
    DuplicateInChannel,
    /// An extra occurrence of a key on the platform side.
    DuplicateInPlatform,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 10] = [
        Category::Matched,
        Category::AmountMismatch,
        Category::StatusMismatch,
        Category::FeeMismatch,
        Category::MissingInChannel,
        Category::MissingInPlatform,
        Category::CrossDayPending,
        Category::CrossDayMatched,
        Category::DuplicateInChannel,
        Category::DuplicateInPlatform,
    ];

    /// The name written to outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "MATCHED",
            Category::AmountMismatch => "AMOUNT_MISMATCH",
            Category::StatusMismatch => "STATUS_MISMATCH",
            Category::FeeMismatch => "FEE_MISMATCH",
            Category::MissingInChannel => "MISSING_IN_CHANNEL",
            Category::MissingInPlatform => "MISSING_IN_PLATFORM",
            Category::CrossDayPending => "CROSS_DAY_PENDING",
            Category::CrossDayMatched => "CROSS_DAY_MATCHED",
            Category::DuplicateInChannel => "DUPLICATE_IN_CHANNEL",
            Category::DuplicateInPlatform => "DUPLICATE_IN_PLATFORM",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown category {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        assert!("MATCH".parse::<Category>().is_err());
    }
}

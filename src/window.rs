//! Automatic-upgrade windows (`UPGRADERD_AUTO_UPGRADE_WINDOW`): their grammar,
//! whether one is open at a given local time and when the next one opens, and
//! the clock that says what time it is. A leaf module: configuration parses
//! windows, `check-version`, `config` and the daemon ask them.
//!
//! Everything is decided on the host's wall-clock time (a `NaiveDateTime`
//! with no offset), so the decisions are pure functions of an injected `now`.
//! A window names the day it *starts* on: `Fri 22:00-02:00` runs from Friday
//! 22:00 to Saturday 02:00.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone, Weekday};

/// A valid value, for error messages.
pub(crate) const EXAMPLE: &str = "Sun 02:00-05:00";

/// The test hook that fixes the clock of a debug build (never read by a release build).
pub(crate) const TEST_NOW: &str = "UPGRADERD_TEST_NOW";

const MINUTES_PER_DAY: u32 = 24 * 60;
const DAYS: [Weekday; 7] =
    [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

/// One window: on which days it starts, and from when to when (minutes after midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First and last day it starts on (a range that may wrap, `Fri-Mon`); `None`: every day.
    days: Option<(Weekday, Weekday)>,
    start: u32,
    /// `1..=1440`; at or before `start` when the window crosses midnight.
    end: u32,
}

/// The configured windows; none means automatic upgrades may run at any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Windows(Vec<Window>);

/// Where a local time stands with respect to the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// No window is configured.
    Unrestricted,
    /// Inside a window, until then (`None`: the windows cover every hour of the week).
    Open { until: Option<NaiveDateTime> },
    /// Outside every window; the next one opens then.
    Closed { opens: NaiveDateTime },
}

impl Windows {
    /// Parses `Sun 02:00-05:00, Mon-Fri 01:00-03:00, 22:00-02:00`; an empty text is no window.
    pub(crate) fn parse(text: &str) -> Result<Windows, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Windows::default());
        }
        text.split(',').map(|part| Window::parse(part.trim())).collect::<Result<_, _>>().map(Windows)
    }

    /// No window configured: automatic upgrades are never held back.
    pub(crate) fn is_unrestricted(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `at` (host local time) is inside a window, and until when; or when the next one opens.
    pub(crate) fn state(&self, at: NaiveDateTime) -> State {
        if self.is_unrestricted() {
            return State::Unrestricted;
        }
        if self.containing(at).is_some() {
            return State::Open { until: self.closes_after(at) };
        }
        let opens = self.intervals_near(at.date()).map(|(start, _)| start).filter(|start| *start > at).min();
        // Every window starts on some day of the coming week, so there is always a next opening.
        State::Closed { opens: opens.expect("a configured window opens within a week") }
    }

    /// The latest end among the windows open at `at`.
    fn containing(&self, at: NaiveDateTime) -> Option<NaiveDateTime> {
        self.intervals_near(at.date()).filter(|(start, end)| *start <= at && at < *end).map(|(_, end)| end).max()
    }

    /// When the open stretch around `at` ends, windows that touch or overlap run together;
    /// `None` when it never ends (every hour of the week is covered).
    fn closes_after(&self, at: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut until = self.containing(at)?;
        // A week of windows joined end to end means every hour is covered.
        for _ in 0..=7 * 24 {
            match self.containing(until) {
                Some(later) => until = later,
                None => return Some(until),
            }
        }
        None
    }

    /// Every window's interval starting from the day before `day` to a week after it.
    fn intervals_near(&self, day: NaiveDate) -> impl Iterator<Item = (NaiveDateTime, NaiveDateTime)> + '_ {
        (-1..=8)
            .filter_map(move |offset| day.checked_add_signed(Duration::days(offset)))
            .flat_map(move |date| self.0.iter().filter_map(move |w| w.interval_on(date)))
    }
}

impl Window {
    fn parse(text: &str) -> Result<Window, String> {
        if text.is_empty() {
            return Err(format!("an empty window between commas; write each like {EXAMPLE}"));
        }
        let (days, times) = match text.find(|c: char| c.is_ascii_digit()) {
            Some(at) => text.split_at(at),
            None => return Err(format!("`{text}` has no time range; write it like {EXAMPLE}")),
        };
        let days = days.trim();
        let days = if days.is_empty() { None } else { Some(parse_days(days)?) };
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| format!("`{}` is not a time range; write it like 02:00-05:00", times.trim()))?;
        let (start, end) = (parse_time(start.trim())?, parse_time(end.trim())?);
        if start == MINUTES_PER_DAY {
            return Err("a window cannot start at 24:00; start it at 00:00".into());
        }
        if start == end {
            return Err(format!("`{}` starts and ends at the same time; a whole day is 00:00-24:00", times.trim()));
        }
        // 00:00 as an end means midnight at the end of the start day.
        let end = if end == 0 { MINUTES_PER_DAY } else { end };
        Ok(Window { days, start, end })
    }

    fn starts_on(&self, day: Weekday) -> bool {
        let Some((first, last)) = self.days else { return true };
        let (first, last, day) =
            (first.num_days_from_monday(), last.num_days_from_monday(), day.num_days_from_monday());
        if first <= last {
            (first..=last).contains(&day)
        } else {
            day >= first || day <= last
        }
    }

    /// The window's interval when it starts on `date`.
    fn interval_on(&self, date: NaiveDate) -> Option<(NaiveDateTime, NaiveDateTime)> {
        if !self.starts_on(date.weekday()) {
            return None;
        }
        let start = date.and_hms_opt(0, 0, 0)? + Duration::minutes(i64::from(self.start));
        let length =
            if self.end > self.start { self.end - self.start } else { self.end + MINUTES_PER_DAY - self.start };
        Some((start, start + Duration::minutes(i64::from(length))))
    }
}

fn parse_days(text: &str) -> Result<(Weekday, Weekday), String> {
    match text.split_once('-') {
        Some((first, last)) => Ok((parse_day(first.trim())?, parse_day(last.trim())?)),
        None => {
            let day = parse_day(text)?;
            Ok((day, day))
        }
    }
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    let lower = text.to_ascii_lowercase();
    DAYS.into_iter()
        .find(|day| {
            let full = weekday_name(*day).to_ascii_lowercase();
            lower == full[..3] || lower == full
        })
        .ok_or_else(|| {
            format!("`{text}` is not a day; use Mon, Tue, Wed, Thu, Fri, Sat or Sun, or a range like Mon-Fri")
        })
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// `H:MM` or `HH:MM`, `00:00` to `24:00`, as minutes after midnight.
fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day; write HH:MM, like 02:00");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, max_len| !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours, 2) || !digits(minutes, 2) || minutes.len() != 2 {
        return Err(bad());
    }
    let (hours, minutes): (u32, u32) = (hours.parse().map_err(|_| bad())?, minutes.parse().map_err(|_| bad())?);
    match (hours, minutes) {
        (24, 0) => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(hours * 60 + minutes),
        _ => Err(bad()),
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.days {
            Some((first, last)) if first == last => write!(f, "{} ", &weekday_name(first)[..3])?,
            Some((first, last)) => write!(f, "{}-{} ", &weekday_name(first)[..3], &weekday_name(last)[..3])?,
            None => {}
        }
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

impl fmt::Display for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Window::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// What time it is on the host. A debug build honours [`TEST_NOW`]
/// (`2026-11-22T01:59:58+01:00`): the clock starts there and runs on.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    fixed: Option<(DateTime<FixedOffset>, Instant)>,
}

impl Clock {
    /// The host's clock and time zone.
    pub(crate) fn system() -> Clock {
        Clock { fixed: None }
    }

    /// The host's clock, or in a debug build the time [`TEST_NOW`] names.
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Clock, String> {
        let Some(text) = get(TEST_NOW).filter(|_| cfg!(debug_assertions)) else { return Ok(Clock::system()) };
        let at = DateTime::parse_from_rfc3339(text.trim())
            .map_err(|e| format!("{TEST_NOW}={text:?} is not an RFC 3339 time ({e})"))?;
        Ok(Clock { fixed: Some((at, Instant::now())) })
    }

    /// Now, in the host's local time with its offset.
    pub(crate) fn now(&self) -> DateTime<FixedOffset> {
        match self.fixed {
            Some((at, since)) => at + Duration::from_std(since.elapsed()).unwrap_or_default(),
            None => Local::now().fixed_offset(),
        }
    }

    /// A local wall-clock time with the offset the host has then (a fixed clock keeps its offset).
    pub(crate) fn resolve(&self, local: NaiveDateTime) -> DateTime<FixedOffset> {
        if let Some((at, _)) = self.fixed {
            let offset = *at.offset();
            return offset.from_local_datetime(&local).single().unwrap_or(at);
        }
        // A time skipped by a DST change does not exist: the hour after it does.
        let resolved = Local
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| Local.from_local_datetime(&(local + Duration::hours(1))).earliest());
        resolved.map(|t| t.fixed_offset()).unwrap_or_else(|| self.now())
    }

    /// Where now stands with respect to `windows`, in absolute times.
    pub(crate) fn verdict(&self, windows: &Windows) -> Verdict {
        match windows.state(self.now().naive_local()) {
            State::Unrestricted => Verdict::Unrestricted,
            State::Open { until } => Verdict::Open { until: until.map(|t| self.resolve(t)) },
            State::Closed { opens } => Verdict::Closed { opens: self.resolve(opens) },
        }
    }
}

/// [`State`] with the host's offsets: what `config`, `check-version` and the daemon say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Unrestricted,
    Open { until: Option<DateTime<FixedOffset>> },
    Closed { opens: DateTime<FixedOffset> },
}

impl Verdict {
    /// For people: `open now, until Sun 2026-11-22 05:00 +01:00` or `closed; next opens …`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Verdict::Unrestricted => "no window: automatic upgrades run whenever an update is found".into(),
            Verdict::Open { until: Some(until) } => format!("open now, until {}", show(until)),
            Verdict::Open { until: None } => "open now, at every hour of the week".into(),
            Verdict::Closed { opens } => format!("closed now; next opens {}", show(opens)),
        }
    }
}

/// One line for `config`, `check-version` and the daemon's log:
/// `auto-upgrade window Sun 02:00-05:00 (host local time): closed now; next opens …`.
pub(crate) fn summary(windows: &Windows, verdict: &Verdict) -> String {
    format!("auto-upgrade window {windows} (host local time): {}", verdict.describe())
}

/// The same for `--json`: `{window, open, opensAt, closesAt}` (RFC 3339 times with the host's offset).
pub(crate) fn to_json(windows: &Windows, verdict: &Verdict) -> serde_json::Value {
    let (open, opens, closes) = match verdict {
        Verdict::Unrestricted => (true, None, None),
        Verdict::Open { until } => (true, None, *until),
        Verdict::Closed { opens } => (false, Some(*opens), None),
    };
    serde_json::json!({
        "window": windows.to_string(),
        "open": open,
        "opensAt": opens.map(|t| t.to_rfc3339()),
        "closesAt": closes.map(|t| t.to_rfc3339()),
    })
}

/// A time for people: `Sun 2026-11-22 02:00 +01:00`.
pub(crate) fn show(at: &DateTime<FixedOffset>) -> String {
    at.format("%a %Y-%m-%d %H:%M %:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap()
    }

    fn windows(text: &str) -> Windows {
        Windows::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    // 2026-11-22 is a Sunday.
    #[test]
    fn a_sunday_night_window_is_open_only_then() {
        let w = windows("Sun 02:00-05:00");
        assert_eq!(w.state(at("2026-11-22 02:00")), State::Open { until: Some(at("2026-11-22 05:00")) });
        assert_eq!(w.state(at("2026-11-22 04:59")), State::Open { until: Some(at("2026-11-22 05:00")) });
        assert_eq!(w.state(at("2026-11-22 05:00")), State::Closed { opens: at("2026-11-29 02:00") });
        assert_eq!(w.state(at("2026-11-22 01:59")), State::Closed { opens: at("2026-11-22 02:00") });
        // From the Monday after, the next opening is six days on, across a month end.
        assert_eq!(w.state(at("2026-11-23 03:00")), State::Closed { opens: at("2026-11-29 02:00") });
        assert_eq!(w.state(at("2026-11-29 06:00")), State::Closed { opens: at("2026-12-06 02:00") });
    }

    #[test]
    fn weekday_ranges_and_every_day() {
        let w = windows("Mon-Fri 01:00-03:00");
        // Saturday and Sunday are closed; Monday opens.
        assert_eq!(w.state(at("2026-11-21 02:00")), State::Closed { opens: at("2026-11-23 01:00") });
        assert_eq!(w.state(at("2026-11-27 02:30")), State::Open { until: Some(at("2026-11-27 03:00")) });
        let daily = windows("03:00-04:00");
        assert_eq!(daily.state(at("2026-11-21 05:00")), State::Closed { opens: at("2026-11-22 03:00") });
        assert_eq!(daily.state(at("2026-11-21 03:30")), State::Open { until: Some(at("2026-11-21 04:00")) });
        // A range that wraps the week: Friday to Monday.
        let weekend = windows("fri-mon 10:00-11:00");
        assert_eq!(weekend.state(at("2026-11-24 10:30")), State::Closed { opens: at("2026-11-27 10:00") });
        assert!(matches!(weekend.state(at("2026-11-23 10:30")), State::Open { .. }), "Monday is in Fri-Mon");
        assert!(matches!(weekend.state(at("2026-11-22 10:30")), State::Open { .. }), "Sunday is in Fri-Mon");
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_starts() {
        let w = windows("Fri 22:00-02:00");
        // 2026-11-27 is a Friday: open from 22:00 to Saturday 02:00.
        assert_eq!(w.state(at("2026-11-27 23:00")), State::Open { until: Some(at("2026-11-28 02:00")) });
        assert_eq!(w.state(at("2026-11-28 01:59")), State::Open { until: Some(at("2026-11-28 02:00")) });
        assert_eq!(w.state(at("2026-11-28 02:00")), State::Closed { opens: at("2026-12-04 22:00") });
        // Friday 01:00 is the end of Thursday night, which is not a window.
        assert_eq!(w.state(at("2026-11-27 01:00")), State::Closed { opens: at("2026-11-27 22:00") });
        let nightly = windows("22:00-02:00");
        assert_eq!(nightly.state(at("2026-11-22 00:30")), State::Open { until: Some(at("2026-11-22 02:00")) });
        assert_eq!(nightly.state(at("2026-11-22 12:00")), State::Closed { opens: at("2026-11-22 22:00") });
        // The last day of the year into the first.
        assert_eq!(nightly.state(at("2026-12-31 23:30")), State::Open { until: Some(at("2027-01-01 02:00")) });
    }

    #[test]
    fn several_windows_take_the_earliest_opening_and_run_together_when_they_touch() {
        let w = windows("Sun 02:00-05:00, Wed 01:00-02:00");
        assert_eq!(w.state(at("2026-11-23 12:00")), State::Closed { opens: at("2026-11-25 01:00") });
        assert_eq!(w.state(at("2026-11-25 03:00")), State::Closed { opens: at("2026-11-29 02:00") });
        let touching = windows("01:00-02:00, 02:00-03:00");
        assert_eq!(touching.state(at("2026-11-22 01:30")), State::Open { until: Some(at("2026-11-22 03:00")) });
        let always = windows("00:00-24:00");
        assert_eq!(always.state(at("2026-11-22 12:00")), State::Open { until: None });
        assert_eq!(Windows::parse("").unwrap().state(at("2026-11-22 12:00")), State::Unrestricted);
    }

    #[test]
    fn values_are_shown_canonically() {
        assert_eq!(windows("sunday 2:00 - 5:00").to_string(), "Sun 02:00-05:00");
        assert_eq!(windows(" Mon-fri 01:00-03:00 ,22:00-00:00").to_string(), "Mon-Fri 01:00-03:00, 22:00-24:00");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |text: &str| Windows::parse(text).unwrap_err();
        assert!(err("Sonday 02:00-05:00").contains("`Sonday` is not a day"), "{}", err("Sonday 02:00-05:00"));
        assert!(err("Sun 2-5").contains("`2` is not a time of day"), "{}", err("Sun 2-5"));
        assert!(err("Sun 02:00").contains("not a time range"));
        assert!(err("Sun 25:00-26:00").contains("`25:00` is not a time of day"));
        assert!(err("Sun 02:60-03:00").contains("`02:60`"));
        assert!(err("Sun").contains("has no time range"));
        assert!(err("Sun 02:00-05:00,").contains("empty window"));
        assert!(err("03:00-03:00").contains("same time"));
        assert!(err("24:00-02:00").contains("cannot start at 24:00"));
        assert!(err("Sun-Mon-Tue 01:00-02:00").contains("is not a day"));
    }

    #[test]
    fn a_fixed_clock_runs_on_and_keeps_its_offset() {
        let clock = Clock::from_env(|_| Some("2026-11-22T01:59:00+01:00".into())).unwrap();
        let now = clock.now();
        assert_eq!(now.offset().local_minus_utc(), 3600);
        assert!(now >= DateTime::parse_from_rfc3339("2026-11-22T01:59:00+01:00").unwrap());
        let w = windows("Sun 02:00-05:00");
        match clock.verdict(&w) {
            Verdict::Closed { opens } => assert_eq!(show(&opens), "Sun 2026-11-22 02:00 +01:00"),
            other => panic!("{other:?}"),
        }
        // Another offset, no DST: the same wall-clock rules.
        let clock = Clock::from_env(|_| Some("2026-11-22T03:00:00-05:00".into())).unwrap();
        match clock.verdict(&w) {
            Verdict::Open { until: Some(until) } => assert_eq!(show(&until), "Sun 2026-11-22 05:00 -05:00"),
            other => panic!("{other:?}"),
        }
        assert!(Clock::from_env(|_| Some("tomorrow".into())).unwrap_err().contains(TEST_NOW));
    }
}

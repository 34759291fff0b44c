//! How a batch's records become objects: which records each one holds, and its body.

use std::collections::BTreeMap;

use pipeline::quarantine_line::QuarantineLine;

use crate::{ObjectGroup, State, Unit};

/// The records of each object, in the order given; `group_of` names a record's object, or `None`
/// when the record is not written now.
pub(crate) fn group<'u, 'a>(
    units: &'u [Unit<'a>],
    group_of: impl Fn(&Unit<'a>) -> Option<ObjectGroup<'a>>,
) -> BTreeMap<ObjectGroup<'a>, Vec<&'u Unit<'a>>> {
    let mut groups: BTreeMap<ObjectGroup, Vec<&Unit>> = BTreeMap::new();
    // Neighbours mostly share an object (one shard, arrival order): one map lookup per run of them.
    let mut run: Option<(ObjectGroup, Vec<&Unit>)> = None;
    for unit in units {
        let Some(key) = group_of(unit) else {
            continue;
        };
        match &mut run {
            Some((run_key, members)) if *run_key == key => members.push(unit),
            _ => {
                if let Some((done, members)) = run.replace((key, vec![unit])) {
                    groups.entry(done).or_default().extend(members);
                }
            }
        }
    }
    if let Some((done, members)) = run {
        groups.entry(done).or_default().extend(members);
    }
    groups
}

pub(crate) fn staging_body(members: &[&Unit]) -> Vec<u8> {
    let mut body = Vec::with_capacity(members.iter().map(|u| u.data.len() + 256).sum());
    for unit in members {
        if let State::Claimed(event) = &unit.state {
            pipeline::staging_line::push_staging_line(
                &mut body,
                event,
                unit.received_at,
                &unit.source(),
            );
        }
    }
    body
}

pub(crate) fn quarantine_body(members: &[&Unit]) -> Vec<u8> {
    let mut body = Vec::with_capacity(members.iter().map(|u| u.data.len() * 4 / 3 + 256).sum());
    for unit in members {
        if let State::Quarantined(rejection) = &unit.state {
            QuarantineLine::record(
                rejection.reason,
                &rejection.detail,
                unit.source(),
                unit.received_at,
                unit.data,
            )
            .push_to(&mut body);
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use pipeline::layout::Minute;

    use super::*;
    use crate::ObjectKind;

    /// Runs of neighbours and scattered records end in the same objects, each record once and in
    /// the order given; records named no object are left out.
    #[test]
    fn groups_every_record_into_its_object_in_order() {
        let unit = |shard_id, sequence_number| Unit {
            shard_id,
            sequence_number,
            sub_sequence_number: None,
            event_id: "",
            received_at: 0,
            data: b"",
            state: State::Duplicate,
        };
        let shards = ["a", "a", "b", "a", "c", "b", "b", "a", "skip", "a"];
        let sequences = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
        let units: Vec<Unit> = shards
            .iter()
            .zip(sequences)
            .map(|(s, n)| unit(s, n))
            .collect();
        let groups = group(&units, |unit| {
            (unit.shard_id != "skip")
                .then(|| (ObjectKind::Staging, unit.shard_id, Minute::of_micros(0)))
        });
        let members = |shard| {
            groups[&(ObjectKind::Staging, shard, Minute::of_micros(0))]
                .iter()
                .map(|u| u.sequence_number)
                .collect::<Vec<_>>()
        };
        assert_eq!(groups.len(), 3);
        assert_eq!(members("a"), ["1", "2", "4", "8", "10"]);
        assert_eq!(members("b"), ["3", "6", "7"]);
        assert_eq!(members("c"), ["5"]);
    }
}

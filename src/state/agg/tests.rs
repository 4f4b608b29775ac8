//! Unit tests of aggregate specs, accumulators and the table.

use super::*;
use crate::state::DeltaLog;

fn out(name: &str, spec: &str, ty: ColumnType) -> AggOutput {
    AggOutput::parse(name, spec, |_| Some(ty)).unwrap()
}

#[test]
fn parse_agg_accepts_every_function() {
    assert_eq!(parse_agg("count()").unwrap(), (AggFn::Count, None));
    assert_eq!(parse_agg(" COUNT( ) ").unwrap(), (AggFn::Count, None));
    assert_eq!(parse_agg("first_seen()").unwrap(), (AggFn::FirstSeen, None));
    for (s, f) in [
        ("sum(amount)", AggFn::Sum),
        ("min( amount )", AggFn::Min),
        ("max(amount)", AggFn::Max),
        ("avg(amount)", AggFn::Avg),
        ("last(amount)", AggFn::Last),
    ] {
        assert_eq!(
            parse_agg(s).unwrap(),
            (f, Some("amount".to_string())),
            "{s}"
        );
    }
    assert_eq!(
        parse_agg("ewma(x, 0.1)").unwrap(),
        (AggFn::Ewma(0.1), Some("x".to_string()))
    );
    assert_eq!(
        parse_agg("ewma(x,1)").unwrap(),
        (AggFn::Ewma(1.0), Some("x".to_string()))
    );
}

#[test]
fn parse_agg_errors_are_precise() {
    let err = |s: &str| parse_agg(s).unwrap_err();
    assert!(
        err("count(x)").contains("takes no argument"),
        "{}",
        err("count(x)")
    );
    assert!(err("sum()").contains("exactly one column"));
    assert!(err("sum(a, b)").contains("exactly one column"));
    assert!(err("median(x)").contains("unknown aggregate function `median`"));
    assert!(err("sum").contains("not an aggregate call"));
    assert!(err("ewma(x)").contains("smoothing factor"));
    assert!(err("ewma(x, 0)").contains("out of range"));
    assert!(err("ewma(x, 1.5)").contains("out of range"));
    assert!(err("ewma(x, NaN)").contains("out of range"));
    assert!(err("ewma(x, abc)").contains("not a number"));
    assert!(err("sum(a b)").contains("not a column name"));
}

#[test]
fn output_types_follow_input_types() {
    let ty = |s, t| out("o", s, t).output_type();
    assert_eq!(ty("count()", ColumnType::Utf8), ColumnType::Int64);
    assert_eq!(ty("sum(x)", ColumnType::Int64), ColumnType::Int64);
    assert_eq!(ty("sum(x)", ColumnType::Float64), ColumnType::Float64);
    assert_eq!(ty("max(x)", ColumnType::Int64), ColumnType::Int64);
    assert_eq!(ty("last(x)", ColumnType::Float64), ColumnType::Float64);
    assert_eq!(ty("avg(x)", ColumnType::Int64), ColumnType::Float64);
    assert_eq!(ty("ewma(x, 0.5)", ColumnType::Int64), ColumnType::Float64);
    assert_eq!(ty("first_seen()", ColumnType::Int64), ColumnType::Int64);
    let e = AggOutput::parse("o", "sum(name)", |_| Some(ColumnType::Utf8)).unwrap_err();
    assert!(
        e.to_string().contains("needs an int64 or float64 column"),
        "{e}"
    );
    let e = AggOutput::parse("o", "sum(nope)", |_| None).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

fn table(specs: &[(&str, &str)], ty: ColumnType) -> AggregateTable {
    AggregateTable::new(
        "t".into(),
        specs.iter().map(|(n, s)| out(n, s, ty)).collect(),
        true,
    )
}

#[test]
fn int_aggregates_with_nulls() {
    let mut t = table(
        &[
            ("n", "count()"),
            ("s", "sum(x)"),
            ("lo", "min(x)"),
            ("hi", "max(x)"),
            ("a", "avg(x)"),
            ("l", "last(x)"),
            ("f", "first_seen()"),
        ],
        ColumnType::Int64,
    );
    let vals = |v: AggValues<'_>| v.iter().collect::<Vec<_>>();
    // A null first: counted, but no value yet.
    let v = vals(t.update(Val::Str("k"), 1000, |_| Val::Null).unwrap());
    assert_eq!(
        v,
        vec![
            Val::Int(1),
            Val::Null,
            Val::Null,
            Val::Null,
            Val::Null,
            Val::Null,
            Val::Int(1000)
        ]
    );
    t.update(Val::Str("k"), 2000, |_| Val::Int(5)).unwrap();
    t.update(Val::Str("k"), 3000, |_| Val::Null).unwrap();
    let v = vals(t.update(Val::Str("k"), 4000, |_| Val::Int(-3)).unwrap());
    assert_eq!(
        v,
        vec![
            Val::Int(4),
            Val::Int(2),
            Val::Int(-3),
            Val::Int(5),
            Val::Float(1.0),
            Val::Int(-3),
            Val::Int(1000)
        ]
    );
    assert_eq!(t.len(), 1);
    assert_eq!(vals(t.get(Val::Str("k")).unwrap()), v);
    assert!(t.get(Val::Str("other")).is_none());
    assert!(t.get(Val::Null).is_none());
}

#[test]
fn float_aggregates_and_ewma() {
    let mut t = table(
        &[
            ("s", "sum(x)"),
            ("lo", "min(x)"),
            ("hi", "max(x)"),
            ("e", "ewma(x, 0.5)"),
            ("l", "last(x)"),
        ],
        ColumnType::Float64,
    );
    t.update(Val::Int(7), 0, |_| Val::Float(2.0)).unwrap();
    // Int input coerced for float outputs.
    t.update(Val::Int(7), 0, |_| Val::Int(4)).unwrap();
    let v: Vec<_> = t
        .update(Val::Int(7), 0, |_| Val::Float(1.0))
        .unwrap()
        .iter()
        .collect();
    // ewma: 2 -> 0.5*4+0.5*2=3 -> 0.5*1+0.5*3=2
    assert_eq!(
        v,
        vec![
            Val::Float(7.0),
            Val::Float(1.0),
            Val::Float(4.0),
            Val::Float(2.0),
            Val::Float(1.0)
        ]
    );
}

#[test]
fn type_errors_leave_key_unchanged() {
    let mut t = table(&[("n", "count()"), ("s", "sum(x)")], ColumnType::Int64);
    t.update(Val::Bool(true), 0, |_| Val::Int(1)).unwrap();
    let e = t
        .update(Val::Bool(true), 0, |_| Val::Float(1.5))
        .unwrap_err();
    assert_eq!(
        e,
        UpdateError::Input {
            output: 1,
            expected: ColumnType::Int64,
            got: "float64"
        }
    );
    assert_eq!(t.get(Val::Bool(true)).unwrap().get(0), Val::Int(1));
    assert_eq!(
        t.update(Val::Null, 0, |_| Val::Int(1)).unwrap_err(),
        UpdateError::Key(KeyError::Null)
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn integer_sum_saturates() {
    let mut t = table(&[("s", "sum(x)")], ColumnType::Int64);
    t.update(Val::Int(1), 0, |_| Val::Int(i64::MAX)).unwrap();
    let v = t.update(Val::Int(1), 0, |_| Val::Int(10)).unwrap().get(0);
    assert_eq!(v, Val::Int(i64::MAX));
}

fn capacities(t: &AggregateTable) -> [usize; 6] {
    [
        t.slots.index.capacity(),
        t.slots.keys.capacity(),
        t.accs.capacity(),
        t.slots.marks.capacity(),
        t.slots.log.slots.capacity(),
        t.slots.log.cells_capacity(),
    ]
}

#[test]
fn warm_updates_of_existing_keys_grow_nothing() {
    // A proxy for "no allocation per request": after a warm-up epoch,
    // updating existing keys (many times each, across a capture with a
    // recycled spare) leaves every buffer's capacity unchanged.
    let mut t = table(
        &[("n", "count()"), ("s", "sum(x)"), ("a", "avg(x)")],
        ColumnType::Int64,
    );
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        t.update(Val::Str(k), 0, |_| Val::Int(i as i64)).unwrap();
    }
    let mut spare = DeltaLog::default();
    t.swap_log(&mut spare);
    for k in &keys {
        t.update(Val::Str(k), 0, |_| Val::Int(1)).unwrap();
    }
    t.swap_log(&mut spare);
    let before = capacities(&t);
    for round in 0..3 {
        for k in keys.iter().rev() {
            t.update(Val::Str(k), 0, |_| Val::Int(round)).unwrap();
        }
    }
    t.swap_log(&mut spare);
    for k in &keys[..500] {
        t.update(Val::Str(k), 0, |_| Val::Null).unwrap();
    }
    assert_eq!(capacities(&t), before);
    assert_eq!(t.slots.log.slots.len(), 500);
}

#[test]
fn restore_round_trips_every_op() {
    let specs = [
        ("n", "count()"),
        ("s", "sum(x)"),
        ("lo", "min(x)"),
        ("a", "avg(x)"),
        ("e", "ewma(x, 0.3)"),
        ("f", "first_seen()"),
    ];
    for ty in [ColumnType::Int64, ColumnType::Float64] {
        let mut t = table(&specs, ty);
        let x = |i: i64| {
            if ty == ColumnType::Int64 {
                Val::Int(i)
            } else {
                Val::Float(i as f64 * 0.7)
            }
        };
        for i in 0..5 {
            t.update(Val::Str("a"), 10 + i, |_| x(i)).unwrap();
        }
        t.update(Val::Str("b"), 99, |_| Val::Null).unwrap();
        for key in [Val::Str("a"), Val::Str("b")] {
            let accs = t.accs_of(key).unwrap().to_vec();
            let restored: Vec<Acc> = t
                .ops()
                .iter()
                .zip(&accs)
                .map(|(op, acc)| {
                    let cols: Vec<Option<Val<'_>>> = op
                        .state_values(*acc)
                        .into_iter()
                        .flatten()
                        .map(Some)
                        .collect();
                    op.acc_from_state(&cols, 0)
                })
                .collect();
            assert_eq!(restored, accs, "{ty} {key:?}");
        }
    }
}

//! What an `aggregate` step declares: its functions ([`AggFn`], parsed from
//! `"sum(amount)"` by [`parse_agg`]), its outputs ([`AggOutput`]) and the
//! table-kind seam for them ([`KindSpec`] for [`AggregateSpec`]): building the
//! table, the checkpoint columns, the compatibility check against a written
//! checkpoint. The accumulators and the table itself are in the parent module.

use super::*;
/// An aggregate function of an `aggregate` step's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggFn {
    /// `count()`: updates seen for the key.
    Count,
    /// `sum(x)`: sum of non-null `x`.
    Sum,
    /// `min(x)`: smallest non-null `x`.
    Min,
    /// `max(x)`: largest non-null `x`.
    Max,
    /// `avg(x)`: mean of non-null `x`.
    Avg,
    /// `ewma(x, alpha)`: exponentially weighted moving average with smoothing
    /// factor `alpha` in `(0, 1]` (1 keeps only the latest value).
    Ewma(f64),
    /// `last(x)`: the most recent non-null `x`.
    Last,
    /// `first_seen()`: unix milliseconds of the key's first update.
    FirstSeen,
}

impl AggFn {
    /// The function name as written in configuration (`ewma` for `Ewma`).
    pub fn name(&self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
            AggFn::Ewma(_) => "ewma",
            AggFn::Last => "last",
            AggFn::FirstSeen => "first_seen",
        }
    }

    /// True for the functions that read an input column.
    pub fn takes_input(&self) -> bool {
        !matches!(self, AggFn::Count | AggFn::FirstSeen)
    }

    /// The output type given the input column's type (`None` for `count()`
    /// and `first_seen()`).
    pub fn output_type(&self, input: Option<ColumnType>) -> ColumnType {
        match self {
            AggFn::Count | AggFn::FirstSeen => ColumnType::Int64,
            AggFn::Avg | AggFn::Ewma(_) => ColumnType::Float64,
            AggFn::Sum | AggFn::Min | AggFn::Max | AggFn::Last => {
                input.unwrap_or(ColumnType::Float64)
            }
        }
    }
}

const FUNCTIONS: &str =
    "count(), sum(x), min(x), max(x), avg(x), ewma(x, alpha), last(x), first_seen()";

/// Parses an aggregate spec such as `count()`, `sum(amount)` or
/// `ewma(latency, 0.1)` into the function and its argument column.
///
/// Function names are case-insensitive; whitespace around names and
/// arguments is ignored. Errors are precise sentences naming the spec.
pub fn parse_agg(spec: &str) -> Result<(AggFn, Option<String>), String> {
    let text = spec.trim();
    let (name, inner) = match (text.find('('), text.strip_suffix(')')) {
        (Some(open), Some(body)) if open < body.len() => (text[..open].trim(), &body[open + 1..]),
        _ => {
            return Err(format!(
                "`{spec}` is not an aggregate call; expected one of {FUNCTIONS}"
            ));
        }
    };
    let args: Vec<&str> = if inner.trim().is_empty() {
        Vec::new()
    } else {
        inner.split(',').map(str::trim).collect()
    };
    let lower = name.to_ascii_lowercase();
    let func = match lower.as_str() {
        "count" => AggFn::Count,
        "sum" => AggFn::Sum,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "avg" | "mean" => AggFn::Avg,
        "ewma" => AggFn::Ewma(0.0),
        "last" => AggFn::Last,
        "first_seen" => AggFn::FirstSeen,
        _ => {
            return Err(format!(
                "unknown aggregate function `{name}` in `{spec}`; expected one of {FUNCTIONS}"
            ));
        }
    };
    match func {
        AggFn::Count | AggFn::FirstSeen => {
            if !args.is_empty() {
                return Err(format!(
                    "`{lower}()` takes no argument, found `{}` in `{spec}`",
                    inner.trim()
                ));
            }
            Ok((func, None))
        }
        AggFn::Ewma(_) => {
            if args.len() != 2 {
                return Err(format!(
                    "`ewma` takes a column and a smoothing factor, e.g. `ewma(x, 0.1)`; found {} argument(s) in `{spec}`",
                    args.len()
                ));
            }
            let column = column_arg(args[0], spec)?;
            let alpha: f64 = args[1].parse().map_err(|_| {
                format!(
                    "`{}` in `{spec}` is not a number; the ewma smoothing factor must be in (0, 1]",
                    args[1]
                )
            })?;
            if !(alpha > 0.0 && alpha <= 1.0) {
                return Err(format!(
                    "ewma smoothing factor {alpha} in `{spec}` is out of range; expected a number in (0, 1]"
                ));
            }
            Ok((AggFn::Ewma(alpha), Some(column)))
        }
        _ => {
            if args.len() != 1 {
                return Err(format!(
                    "`{lower}` takes exactly one column argument, e.g. `{lower}(amount)`; found {} in `{spec}`",
                    args.len()
                ));
            }
            Ok((func, Some(column_arg(args[0], spec)?)))
        }
    }
}

fn column_arg(arg: &str, spec: &str) -> Result<String, String> {
    let name = arg
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg);
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | ',' | '"'))
    {
        return Err(format!(
            "`{arg}` in `{spec}` is not a column name; aggregate arguments are plain column names"
        ));
    }
    Ok(name.to_string())
}

/// One output of an `aggregate` step: its name, function and input column.
#[derive(Debug, Clone, PartialEq)]
pub struct AggOutput {
    /// The output column name.
    pub name: String,
    /// The aggregate function.
    pub func: AggFn,
    /// The input column name, for functions that take one.
    pub input: Option<String>,
    /// The input column's type, for functions that take one.
    pub input_type: Option<ColumnType>,
}

impl AggOutput {
    /// An output from a parsed function and its input column with its type.
    /// Checks that the function takes an input exactly when one is given and
    /// that the input is numeric (`int64` or `float64`).
    pub fn new(
        name: impl Into<String>,
        func: AggFn,
        input: Option<(String, ColumnType)>,
    ) -> Result<AggOutput, StateError> {
        let name = name.into();
        match (&input, func.takes_input()) {
            (None, true) => {
                return Err(StateError::Output {
                    output: name,
                    message: format!("{}(...) needs an input column", func.name()),
                });
            }
            (Some((col, _)), false) => {
                return Err(StateError::Output {
                    output: name,
                    message: format!("{}() takes no input column, got `{col}`", func.name()),
                });
            }
            (Some((col, ty)), true) if !ty.is_numeric() => {
                return Err(StateError::Output {
                    output: name,
                    message: format!(
                        "{}({col}) needs an int64 or float64 column; `{col}` is {ty}",
                        func.name()
                    ),
                });
            }
            _ => {}
        }
        let (input, input_type) = match input {
            Some((c, t)) => (Some(c), Some(t)),
            None => (None, None),
        };
        Ok(AggOutput {
            name,
            func,
            input,
            input_type,
        })
    }

    /// Parses `spec` (see [`parse_agg`]) and resolves its argument's type
    /// with `column_type` (the route's columns at this step).
    pub fn parse(
        name: impl Into<String>,
        spec: &str,
        column_type: impl FnOnce(&str) -> Option<ColumnType>,
    ) -> Result<AggOutput, StateError> {
        let name = name.into();
        let (func, arg) = parse_agg(spec).map_err(|message| StateError::Output {
            output: name.clone(),
            message,
        })?;
        let input = match arg {
            Some(col) => match column_type(&col) {
                Some(ty) => Some((col, ty)),
                None => {
                    return Err(StateError::Output {
                        output: name,
                        message: format!("`{spec}` reads column `{col}`, which does not exist"),
                    });
                }
            },
            None => None,
        };
        AggOutput::new(name, func, input)
    }

    /// The type of this output's values.
    pub fn output_type(&self) -> ColumnType {
        self.func.output_type(self.input_type)
    }

    /// This output's columns in checkpoint files, for table `table`:
    /// `<table>.<output>` (a timestamp for `first_seen()`), preceded for
    /// `avg` by `<table>.<output>.sum` and `.n`, its running sum and count.
    pub(crate) fn state_columns(&self, table: &str) -> Vec<StateColumn> {
        let name = format!("{table}.{}", self.name);
        let mut cols = Vec::with_capacity(3);
        if self.func == AggFn::Avg {
            cols.push(StateColumn::new(format!("{name}.sum"), ColumnType::Float64));
            cols.push(StateColumn::new(format!("{name}.n"), ColumnType::Int64));
        }
        let mut value = StateColumn::new(name, self.output_type());
        value.time = self.func == AggFn::FirstSeen;
        cols.push(value);
        cols
    }

    /// The spec as configuration would write it, e.g. `ewma(x, 0.1)`.
    pub fn spec(&self) -> String {
        let col = self.input.as_deref().unwrap_or("");
        match self.func {
            AggFn::Ewma(a) => format!("ewma({col}, {a})"),
            f => format!("{}({col})", f.name()),
        }
    }
}

/// What an `aggregate` step declares: its outputs, in order.
pub type AggregateSpec = Vec<AggOutput>;

impl TableSpec {
    /// An `aggregate` table.
    pub fn aggregate(name: impl Into<String>, outputs: Vec<AggOutput>) -> TableSpec {
        TableSpec {
            name: name.into(),
            kind: TableKind::Aggregate(outputs),
        }
    }
}

impl KindSpec for AggregateSpec {
    type Table = AggregateTable;

    fn build(&self, name: String, logging: bool) -> AggregateTable {
        AggregateTable::new(name, self.clone(), logging)
    }

    /// Outputs non-empty, with unique names.
    fn validate(&self, table: &str) -> Result<(), StateError> {
        let error = |message: String| StateError::Outputs {
            table: table.to_string(),
            message,
        };
        if self.is_empty() {
            return Err(error(
                "no outputs; declare at least one, e.g. `n = \"count()\"`".into(),
            ));
        }
        for (j, o) in self.iter().enumerate() {
            if self[..j].iter().any(|p| p.name == o.name) {
                return Err(error(format!("two outputs are named `{}`", o.name)));
            }
        }
        Ok(())
    }

    fn state_columns(&self, table: &str) -> Vec<StateColumn> {
        self.iter().flat_map(|o| o.state_columns(table)).collect()
    }

    fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
        self.iter()
            .map(|o| (o.name.clone(), o.output_type(), o.func == AggFn::FirstSeen))
            .collect()
    }

    /// Outputs are matched by name (a new one starts empty, a dropped one
    /// is ignored) and must keep their function and type.
    fn reconcile(
        &self,
        table: &str,
        written: &AggregateSpec,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        for co in self {
            match written.iter().find(|wo| wo.name == co.name) {
                Some(wo) => {
                    if wo.func.name() != co.func.name() || wo.output_type() != co.output_type() {
                        return Err(format!(
                            "output `{}` is `{}` ({}) in the checkpoint but `{}` ({}) in the configuration",
                            co.name,
                            wo.spec(),
                            wo.output_type(),
                            co.spec(),
                            co.output_type()
                        ));
                    }
                }
                None => warnings.push(format!(
                    "aggregate `{table}` output `{}` is new; it starts empty for restored keys",
                    co.name
                )),
            }
        }
        for wo in written {
            if !self.iter().any(|co| co.name == wo.name) {
                warnings.push(format!(
                    "aggregate `{table}` output `{}` is not declared any more; its state is ignored",
                    wo.name
                ));
            }
        }
        Ok(())
    }

    fn describe(&self, desc: &mut TableDesc) {
        desc.outputs = self
            .iter()
            .map(|o| OutputDesc {
                name: o.name.clone(),
                spec: o.spec(),
                input_type: o.input_type.map(|t| t.name().to_string()),
                output_type: o.output_type().name().to_string(),
            })
            .collect();
    }

    fn from_desc(desc: &TableDesc) -> Result<AggregateSpec, String> {
        let mut outputs = Vec::with_capacity(desc.outputs.len());
        for o in &desc.outputs {
            let input = match &o.input_type {
                Some(t) => Some(desc.column_type(t)?),
                None => None,
            };
            let out = AggOutput::parse(o.name.clone(), &o.spec, |_| input)
                .map_err(|e| format!("table `{}`: {e}", desc.name))?;
            outputs.push(out);
        }
        Ok(outputs)
    }
}

//! Typed rows: the values one request carries through a route's pipeline.
//!
//! A route's columns are fixed when the plan is compiled: every column has an
//! index, a [`ColumnType`] and a nullability. A [`Row`] is a vector of
//! [`Slot`]s indexed by column, reused from one request to the next. A slot keeps
//! its string buffer when it is overwritten or nulled, so once a shard is warm,
//! filling a row allocates nothing.
//!
//! [`Val`] is the borrowed view of one value that expressions compute and
//! operators read; it is `Copy` and never owns heap memory.

use arrow_schema::{DataType, Field};

/// The column types coreline supports, a subset of arrow's [`DataType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// UTF-8 text (`utf8`).
    Utf8,
    /// 64-bit signed integer (`int64`).
    Int64,
    /// 64-bit IEEE float (`float64`).
    Float64,
    /// Boolean (`bool`).
    Boolean,
    /// A vector of 64-bit floats (`array<float64>`); a JSON `null` element
    /// is NaN, a missing value.
    Float64Array,
    /// A vector of 32-bit floats (`array<float32>`); nulls as for
    /// `array<float64>`.
    Float32Array,
    /// A vector of 64-bit integers (`array<int64>`); elements are never
    /// null.
    Int64Array,
}

impl ColumnType {
    /// The name used in configuration files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "utf8",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "bool",
            ColumnType::Float64Array => "array<float64>",
            ColumnType::Float32Array => "array<float32>",
            ColumnType::Int64Array => "array<int64>",
        }
    }

    /// Parses a configuration type name (`utf8`, `int64`, `float64`, `bool`,
    /// `array<float64>`, `array<float32>`, `array<int64>`). Arrow's
    /// spellings (`Utf8`, `Int64`, `Float64`, `Boolean`) and `string`,
    /// `boolean` are accepted too, and blanks inside `array< ... >`.
    pub fn parse(name: &str) -> Option<ColumnType> {
        let name = name.to_ascii_lowercase();
        if let Some(inner) = name
            .strip_prefix("array")
            .map(str::trim_start)
            .and_then(|s| s.strip_prefix('<'))
            .and_then(|s| s.strip_suffix('>'))
        {
            return match inner.trim() {
                "float64" | "double" => Some(ColumnType::Float64Array),
                "float32" | "float" => Some(ColumnType::Float32Array),
                "int64" | "bigint" => Some(ColumnType::Int64Array),
                _ => None,
            };
        }
        match name.as_str() {
            "utf8" | "string" => Some(ColumnType::Utf8),
            "int64" => Some(ColumnType::Int64),
            "float64" => Some(ColumnType::Float64),
            "bool" | "boolean" => Some(ColumnType::Boolean),
            _ => None,
        }
    }

    /// The arrow type this column has in schemas and checkpoint files.
    pub fn to_arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Float64Array => DataType::new_list(DataType::Float64, false),
            ColumnType::Float32Array => DataType::new_list(DataType::Float32, false),
            ColumnType::Int64Array => DataType::new_list(DataType::Int64, false),
        }
    }

    /// The coreline type of an arrow type, if it is one coreline supports.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        match data_type {
            DataType::Utf8 => Some(ColumnType::Utf8),
            DataType::Int64 => Some(ColumnType::Int64),
            DataType::Float64 => Some(ColumnType::Float64),
            DataType::Boolean => Some(ColumnType::Boolean),
            DataType::List(item) => match item.data_type() {
                DataType::Float64 => Some(ColumnType::Float64Array),
                DataType::Float32 => Some(ColumnType::Float32Array),
                DataType::Int64 => Some(ColumnType::Int64Array),
                _ => None,
            },
            _ => None,
        }
    }

    /// True for `int64` and `float64`.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int64 | ColumnType::Float64)
    }

    /// The type of a vector's elements as JSON carries them (`float64` for
    /// both float vectors); `None` for scalars.
    pub fn element(self) -> Option<ColumnType> {
        match self {
            ColumnType::Float64Array | ColumnType::Float32Array => Some(ColumnType::Float64),
            ColumnType::Int64Array => Some(ColumnType::Int64),
            _ => None,
        }
    }

    /// True for the `array<...>` types.
    pub fn is_array(self) -> bool {
        matches!(
            self,
            ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array
        )
    }

    /// The scalar this type is, `None` for a vector. Planning keeps the
    /// result where only a scalar makes sense (a header column), so the code
    /// that runs per request matches on [`Scalar`] and has no vector arm.
    pub fn scalar(self) -> Option<Scalar> {
        match self.shape() {
            Shape::Scalar(s) => Some(s),
            Shape::Vector { .. } => None,
        }
    }

    /// What a value of this type is: a scalar, or a vector whose elements
    /// JSON carries as `element` (`float64` for both float vectors).
    pub fn shape(self) -> Shape {
        match self {
            ColumnType::Utf8 => Shape::Scalar(Scalar::Utf8),
            ColumnType::Int64 => Shape::Scalar(Scalar::Int64),
            ColumnType::Float64 => Shape::Scalar(Scalar::Float64),
            ColumnType::Boolean => Shape::Scalar(Scalar::Boolean),
            ColumnType::Float64Array | ColumnType::Float32Array => Shape::Vector {
                element: Scalar::Float64,
            },
            ColumnType::Int64Array => Shape::Vector {
                element: Scalar::Int64,
            },
        }
    }
}

/// What a [`ColumnType`] holds; see [`ColumnType::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar(Scalar),
    /// A vector of numbers.
    Vector {
        /// The elements' type as JSON carries them.
        element: Scalar,
    },
}

/// The scalar column types: a [`ColumnType`] that is not a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `utf8`.
    Utf8,
    /// `int64`.
    Int64,
    /// `float64`.
    Float64,
    /// `bool`.
    Boolean,
}

impl From<Scalar> for ColumnType {
    fn from(s: Scalar) -> ColumnType {
        match s {
            Scalar::Utf8 => ColumnType::Utf8,
            Scalar::Int64 => ColumnType::Int64,
            Scalar::Float64 => ColumnType::Float64,
            Scalar::Boolean => ColumnType::Boolean,
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of a route: its name, type and whether it may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name, as written in the configuration.
    pub name: String,
    /// The value type.
    pub ty: ColumnType,
    /// Whether the column may hold null.
    pub nullable: bool,
}

impl Column {
    /// The arrow field for this column.
    pub fn to_field(&self) -> Field {
        Field::new(&self.name, self.ty.to_arrow(), self.nullable)
    }
}

/// The ordered set of columns a route has at some point of its pipeline.
///
/// Request fields come first, then one column per step that adds one. Names are
/// resolved to indexes here, once, at compile time; nothing looks a name up per
/// request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    columns: Vec<Column>,
    /// Columns a `select` dropped: they keep their slot but can no longer
    /// be named.
    hidden: Vec<bool>,
}

impl Columns {
    /// An empty column set.
    pub fn new() -> Columns {
        Columns::default()
    }

    /// Appends a column and returns its index. A column of the same name is
    /// shadowed: later lookups find the new one.
    pub fn push(&mut self, column: Column) -> usize {
        self.columns.push(column);
        self.hidden.push(false);
        self.columns.len() - 1
    }

    /// Hides column `index`: it keeps its slot, but names no longer find it.
    pub fn hide(&mut self, index: usize) {
        self.hidden[index] = true;
    }

    /// True unless the column was hidden or shadowed by a later column of
    /// the same name.
    pub fn is_visible(&self, index: usize) -> bool {
        self.index_of(&self.columns[index].name) == Some(index)
    }

    /// The index of the visible column with this name (the last one pushed
    /// that is not hidden).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .zip(&self.hidden)
            .rposition(|(c, &h)| !h && c.name == name)
    }

    /// The index of the last column called `name`, hidden or not (a column
    /// only a function reaches, such as a model step's version).
    pub fn index_of_hidden(&self, name: &str) -> Option<usize> {
        self.columns.iter().rposition(|c| c.name == name)
    }

    /// The index of the visible column whose name equals `name` ignoring
    /// ASCII case, used to suggest a spelling in errors.
    pub fn index_of_ignore_case(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .zip(&self.hidden)
            .rposition(|(c, &h)| !h && c.name.eq_ignore_ascii_case(name))
    }

    /// The column at `index`.
    pub fn get(&self, index: usize) -> &Column {
        &self.columns[index]
    }

    /// Number of columns (including shadowed ones).
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// All columns in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter()
    }

    /// The names of the visible columns, for "expected one of" messages.
    pub fn visible_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (c, _) in self
            .columns
            .iter()
            .zip(&self.hidden)
            .rev()
            .filter(|(_, h)| !**h)
        {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        names.reverse();
        names
    }
}

/// A borrowed value: what an expression yields and an operator reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text borrowed from a row slot or an evaluator's scratch buffer.
    Str(&'a str),
    /// A vector borrowed from a row slot or an evaluator's scratch buffer.
    Array(ArrayRef<'a>),
}

/// A borrowed vector: the elements of an `array<...>` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArrayRef<'a> {
    /// `array<float64>`; NaN is a missing element.
    F64(&'a [f64]),
    /// `array<float32>`; NaN is a missing element.
    F32(&'a [f32]),
    /// `array<int64>`.
    I64(&'a [i64]),
}

impl ArrayRef<'_> {
    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            ArrayRef::F64(a) => a.len(),
            ArrayRef::F32(a) => a.len(),
            ArrayRef::I64(a) => a.len(),
        }
    }

    /// True when there are no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column type of this vector.
    pub fn ty(&self) -> ColumnType {
        match self {
            ArrayRef::F64(_) => ColumnType::Float64Array,
            ArrayRef::F32(_) => ColumnType::Float32Array,
            ArrayRef::I64(_) => ColumnType::Int64Array,
        }
    }
}

impl<'a> Val<'a> {
    /// True for [`Val::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// The value as a boolean predicate: `Some(true)` only for `Bool(true)`,
    /// `None` for null.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Storage for one column of a row. The string buffer survives nulls and
/// overwrites, so a warm slot never allocates for text that fits.
///
/// Vectors live in a buffer of their own ([`ArrayBuf`]) that survives the
/// same way; a column has one element type, so once warm the buffer keeps
/// its kind and capacity.
#[derive(Debug, Default)]
pub struct Slot {
    kind: Kind,
    int: i64,
    float: f64,
    text: String,
    array: ArrayBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Null,
    Bool,
    Int,
    Float,
    Str,
    Array,
}

/// The reusable element buffer of a slot holding a vector.
#[derive(Debug, Clone)]
pub enum ArrayBuf {
    /// `array<float64>` elements.
    F64(Vec<f64>),
    /// `array<float32>` elements.
    F32(Vec<f32>),
    /// `array<int64>` elements.
    I64(Vec<i64>),
}

impl Default for ArrayBuf {
    fn default() -> ArrayBuf {
        ArrayBuf::F64(Vec::new())
    }
}

impl ArrayBuf {
    fn as_ref(&self) -> ArrayRef<'_> {
        match self {
            ArrayBuf::F64(v) => ArrayRef::F64(v),
            ArrayBuf::F32(v) => ArrayRef::F32(v),
            ArrayBuf::I64(v) => ArrayRef::I64(v),
        }
    }

    /// Replaces the elements with `source`'s, keeping this buffer when it
    /// has the same element type.
    fn copy_from(&mut self, source: ArrayRef<'_>) {
        match source {
            ArrayRef::F64(a) => self.f64_mut().extend_from_slice(a),
            ArrayRef::F32(a) => self.f32_mut().extend_from_slice(a),
            ArrayRef::I64(a) => self.i64_mut().extend_from_slice(a),
        }
    }

    /// The buffer emptied, as `f64` (switching element type only if it
    /// held another).
    #[inline]
    pub fn f64_mut(&mut self) -> &mut Vec<f64> {
        if !matches!(self, ArrayBuf::F64(_)) {
            *self = ArrayBuf::F64(Vec::new());
        }
        let ArrayBuf::F64(v) = self else {
            unreachable!("set just above")
        };
        v.clear();
        v
    }

    /// The buffer emptied, as `f32`.
    #[inline]
    pub fn f32_mut(&mut self) -> &mut Vec<f32> {
        if !matches!(self, ArrayBuf::F32(_)) {
            *self = ArrayBuf::F32(Vec::new());
        }
        let ArrayBuf::F32(v) = self else {
            unreachable!("set just above")
        };
        v.clear();
        v
    }

    /// The buffer emptied, as `i64`.
    #[inline]
    pub fn i64_mut(&mut self) -> &mut Vec<i64> {
        if !matches!(self, ArrayBuf::I64(_)) {
            *self = ArrayBuf::I64(Vec::new());
        }
        let ArrayBuf::I64(v) = self else {
            unreachable!("set just above")
        };
        v.clear();
        v
    }
}

impl Clone for Slot {
    fn clone(&self) -> Slot {
        let mut slot = Slot::default();
        slot.clone_from(self);
        slot
    }

    /// Reuses this slot's text buffer: saving and restoring a row around a
    /// forwarded request then allocates nothing once warm.
    fn clone_from(&mut self, source: &Slot) {
        self.kind = source.kind;
        self.int = source.int;
        self.float = source.float;
        self.text.clear();
        self.text.push_str(&source.text);
        if source.kind == Kind::Array {
            self.array.copy_from(source.array.as_ref());
        }
    }
}

impl Slot {
    /// The value held, borrowing the slot's text.
    #[inline]
    pub fn get(&self) -> Val<'_> {
        match self.kind {
            Kind::Null => Val::Null,
            Kind::Bool => Val::Bool(self.int != 0),
            Kind::Int => Val::Int(self.int),
            Kind::Float => Val::Float(self.float),
            Kind::Str => Val::Str(&self.text),
            Kind::Array => Val::Array(self.array.as_ref()),
        }
    }

    /// Stores a value, copying text into the slot's own buffer.
    #[inline]
    pub fn set(&mut self, value: Val<'_>) {
        match value {
            Val::Null => self.kind = Kind::Null,
            Val::Bool(b) => {
                self.kind = Kind::Bool;
                self.int = b as i64;
            }
            Val::Int(i) => {
                self.kind = Kind::Int;
                self.int = i;
            }
            Val::Float(f) => {
                self.kind = Kind::Float;
                self.float = f;
            }
            Val::Str(s) => {
                self.text.clear();
                self.text.push_str(s);
                self.kind = Kind::Str;
            }
            Val::Array(a) => {
                self.array.copy_from(a);
                self.kind = Kind::Array;
            }
        }
    }

    /// Sets null, keeping the text buffer for later reuse.
    #[inline]
    pub fn set_null(&mut self) {
        self.kind = Kind::Null;
    }

    /// Clears the text buffer, marks the slot as text and hands the buffer out
    /// to be filled (used by the JSON decoder to unescape in place).
    #[inline]
    pub fn text_mut(&mut self) -> &mut String {
        self.text.clear();
        self.kind = Kind::Str;
        &mut self.text
    }

    /// Marks the slot as a vector and hands its element buffer out to be
    /// filled (emptied by the typed accessors of [`ArrayBuf`]).
    #[inline]
    pub fn array_mut(&mut self) -> &mut ArrayBuf {
        self.kind = Kind::Array;
        &mut self.array
    }
}

/// The values of one request, one [`Slot`] per column of its route.
#[derive(Debug, Default)]
pub struct Row {
    slots: Vec<Slot>,
}

impl Clone for Row {
    fn clone(&self) -> Row {
        Row {
            slots: self.slots.clone(),
        }
    }

    /// Slot by slot, reusing every text buffer (a derived `Clone` would
    /// build a new vector).
    fn clone_from(&mut self, source: &Row) {
        self.slots.clone_from(&source.slots);
    }
}

impl Row {
    /// A row of `width` null slots.
    pub fn with_width(width: usize) -> Row {
        Row {
            slots: vec![Slot::default(); width],
        }
    }

    /// Number of slots.
    pub fn width(&self) -> usize {
        self.slots.len()
    }

    /// Makes the row `width` slots wide, keeping the buffers of the slots it
    /// keeps (no allocation when the width is unchanged).
    pub fn set_width(&mut self, width: usize) {
        self.slots.resize_with(width, Slot::default);
    }

    /// The value of column `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Val<'_> {
        self.slots[index].get()
    }

    /// The slot of column `index`, to write into.
    #[inline]
    pub fn slot_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.slots[index]
    }

    /// Swaps the slot of column `index` with `other`. Operators evaluate into a
    /// scratch slot they own and swap it in, so neither side allocates.
    #[inline]
    pub fn swap_slot(&mut self, index: usize, other: &mut Slot) {
        std::mem::swap(&mut self.slots[index], other);
    }

    /// Sets every slot to null, keeping buffers.
    #[inline]
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.set_null();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keeps_text_buffer_across_null() {
        let mut s = Slot::default();
        s.set(Val::Str("hello world"));
        let cap = s.text.capacity();
        s.set_null();
        assert_eq!(s.get(), Val::Null);
        s.set(Val::Str("hi"));
        assert_eq!(s.get(), Val::Str("hi"));
        assert_eq!(s.text.capacity(), cap);
    }

    #[test]
    fn row_clone_from_reuses_text_buffers() {
        let mut a = Row::with_width(2);
        a.slot_mut(0).set(Val::Str("a fairly long piece of text"));
        a.slot_mut(1).set(Val::Int(7));
        let mut b = Row::with_width(2);
        b.clone_from(&a);
        let cap = b.slots[0].text.capacity();
        a.slot_mut(0).set(Val::Str("short"));
        b.clone_from(&a);
        assert_eq!(b.get(0), Val::Str("short"));
        assert_eq!(b.get(1), Val::Int(7));
        assert_eq!(b.slots[0].text.capacity(), cap);
    }

    #[test]
    fn columns_shadow_and_types_round_trip() {
        let mut cols = Columns::new();
        cols.push(Column {
            name: "a".into(),
            ty: ColumnType::Int64,
            nullable: false,
        });
        let b = cols.push(Column {
            name: "a".into(),
            ty: ColumnType::Utf8,
            nullable: true,
        });
        assert_eq!(cols.index_of("a"), Some(b));
        assert_eq!(cols.visible_names(), vec!["a"]);
        assert!(!cols.is_visible(0));
        cols.hide(b);
        assert_eq!(
            cols.index_of("a"),
            Some(0),
            "the shadowed column shows again"
        );
        cols.hide(0);
        assert_eq!(cols.index_of("a"), None);
        assert!(cols.visible_names().is_empty());
        for t in [
            ColumnType::Utf8,
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Boolean,
        ] {
            assert_eq!(ColumnType::from_arrow(&t.to_arrow()), Some(t));
            assert_eq!(ColumnType::parse(t.name()), Some(t));
        }
    }
}

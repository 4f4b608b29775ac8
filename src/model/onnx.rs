//! ONNX models run with `tract-onnx`, plus the ONNX-ML operators that
//! skl2onnx emits for ordinary scikit-learn pipelines and tract lacks.
//!
//! Loading reads the protobuf, refuses a graph with an operator tract's
//! registry does not know (naming every one), fixes the single input to a
//! batch of one (`[1, n]`) and optimises the graph once ([`OnnxModel`]).
//! Each shard then builds its own plan and reusable `SimpleState`
//! ([`OnnxRunner`]): the input tensor is written in place and handed to
//! tract by reference count, so the runner itself allocates nothing per
//! request; what tract allocates inside a run is measured in
//! `tests/models.rs` and reported in the README.
//!
//! Registered here:
//! - `Scaler` (ai.onnx.ml, `StandardScaler`): `y = (x - offset) * scale`
//!   as `f32`, wired as a cast, a subtraction and a multiplication.
//! - `ArrayFeatureExtractor` (ai.onnx.ml, used for an `MLPClassifier`'s
//!   labels): picks the elements of `X` at `indices` along the last axis;
//!   a rank-1 `X` gives `[1, k]`, as onnxruntime does. Wired as a reshape
//!   of the indices to one axis and a `Gather`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::logic::wire_with_rank_broadcast;

use super::{InputSpec, ModelError, OutputKind, OutputSpec, Outputs, ScoreError, Value};

/// The element type of the model's input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputType {
    F32,
    F64,
}

/// A loaded, optimised ONNX graph with one `[1, n]` input.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    model: Arc<TypedModel>,
    input: InputSpec,
    input_type: InputType,
    n_features: usize,
    outputs: Vec<OutputSpec>,
    /// Operator type → count, from the file's graph.
    operators: BTreeMap<String, usize>,
}

/// The tract ONNX loader with coreline's extra operators registered.
fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register(&mut onnx.op_register);
    onnx
}

fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
    reg.insert("ArrayFeatureExtractor", array_feature_extractor);
}

impl OnnxModel {
    /// Loads and optimises `path`.
    pub(crate) fn load(path: &Path) -> Result<OnnxModel, ModelError> {
        let bad = |message: String| ModelError::Onnx {
            path: path.to_path_buf(),
            message,
        };
        let onnx = framework();
        let proto = onnx
            .proto_model_for_path(path)
            .map_err(|e| bad(format!("not a readable ONNX model: {e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| bad("the model has no graph".into()))?;
        let mut operators = BTreeMap::new();
        for node in &graph.node {
            *operators.entry(node.op_type.clone()).or_insert(0) += 1;
        }
        let unsupported: Vec<String> = operators
            .keys()
            .filter(|op| !onnx.op_register.0.contains_key(op.as_str()))
            .cloned()
            .collect();
        if !unsupported.is_empty() {
            return Err(ModelError::UnsupportedOnnxOps {
                path: path.to_path_buf(),
                ops: unsupported,
            });
        }
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !initializers.contains(n))
            .collect();
        if inputs.len() != 1 {
            return Err(bad(format!(
                "expected one input tensor, the graph has {}: {}",
                inputs.len(),
                inputs.join(", ")
            )));
        }
        let output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();

        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| bad(format!("{e:#}")))?;
        let fact = model
            .input_fact(0)
            .map_err(|e| bad(format!("{e:#}")))?
            .clone();
        let input_type = match fact.datum_type() {
            Some(DatumType::F32) | None => InputType::F32,
            Some(DatumType::F64) => InputType::F64,
            Some(t) => {
                return Err(bad(format!(
                    "input {:?} is of type {t:?}; only float and double inputs are supported",
                    inputs[0]
                )));
            }
        };
        // The last dimension is the feature count; a leading batch dimension
        // (often symbolic) is fixed to 1 below.
        let dims: Vec<Option<usize>> = fact
            .shape
            .dims()
            .map(|d| d.concretize().and_then(|d| d.to_usize().ok()))
            .collect();
        let n_features = match (fact.shape.is_open(), dims.as_slice()) {
            (false, [_, n]) | (false, [n]) => *n,
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "input {:?} has shape {:?}; expected [batch, n] with a fixed n",
                inputs[0], fact.shape
            ))
        })?;
        let dt = match input_type {
            InputType::F32 => f32::datum_type(),
            InputType::F64 => f64::datum_type(),
        };
        model
            .set_input_fact(0, InferenceFact::dt_shape(dt, [1, n_features]))
            .map_err(|e| bad(format!("{e:#}")))?;
        let typed = model
            .into_optimized()
            .map_err(|e| bad(format!("cannot build an optimised plan: {e:#}")))?;

        let mut outputs = vec![];
        for (i, name) in output_names.iter().enumerate() {
            let fact = typed.output_fact(i).map_err(|e| bad(format!("{e:#}")))?;
            let len = fact
                .shape
                .as_concrete()
                .map(|s| s.iter().product::<usize>())
                .ok_or_else(|| {
                    bad(format!(
                        "output {name:?} has no fixed shape ({:?})",
                        fact.shape
                    ))
                })?;
            let kind = match fact.datum_type {
                DatumType::F32 | DatumType::F64 if len == 1 => OutputKind::Float,
                DatumType::F32 | DatumType::F64 => OutputKind::Vector(len),
                // tract may type an int64 output as TDim (symbolic integer).
                DatumType::I64 | DatumType::I32 | DatumType::TDim if len == 1 => OutputKind::Label,
                t => {
                    return Err(bad(format!(
                        "output {name:?} is a {t:?} tensor of {len} elements; supported outputs \
                         are float tensors and single integer labels (export string class \
                         labels as integers)"
                    )));
                }
            };
            outputs.push(OutputSpec {
                name: name.clone(),
                kind,
            });
        }
        Ok(OnnxModel {
            model: Arc::new(typed),
            input: InputSpec {
                name: inputs[0].to_string(),
                shape: vec![1, n_features],
                dtype: match input_type {
                    InputType::F32 => "float32",
                    InputType::F64 => "float64",
                },
            },
            input_type,
            n_features,
            outputs,
            operators,
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub(crate) fn input(&self) -> &InputSpec {
        &self.input
    }

    pub(crate) fn output_specs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    /// Operator type → count, as in the file.
    pub fn operators(&self) -> &BTreeMap<String, usize> {
        &self.operators
    }

    /// A plan and state for one shard.
    pub(crate) fn runner(&self) -> Result<OnnxRunner, ModelError> {
        let bad = |e: TractError| ModelError::Onnx {
            path: "<plan>".into(),
            message: format!("cannot build a plan: {e:#}"),
        };
        let plan = SimplePlan::new((*self.model).clone()).map_err(bad)?;
        let state = SimpleState::new(&plan).map_err(bad)?;
        let input = Arc::new(
            match self.input_type {
                InputType::F32 => Tensor::zero::<f32>(&[1, self.n_features]),
                InputType::F64 => Tensor::zero::<f64>(&[1, self.n_features]),
            }
            .map_err(bad)?,
        );
        Ok(OnnxRunner {
            state,
            input,
            input_type: self.input_type,
            n_features: self.n_features,
        })
    }
}

/// One shard's plan, state and input tensor.
pub struct OnnxRunner {
    state: TypedSimpleState,
    input: Arc<Tensor>,
    input_type: InputType,
    n_features: usize,
}

impl std::fmt::Debug for OnnxRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRunner")
            .field("n_features", &self.n_features)
            .finish()
    }
}

impl OnnxRunner {
    pub(crate) fn score(&mut self, x: &[f64], out: &mut Outputs) -> Result<(), ScoreError> {
        if x.len() != self.n_features {
            return Err(ScoreError::FeatureCount {
                expected: self.n_features,
                got: x.len(),
            });
        }
        // The state drops its reference at the end of each run, so the input
        // is exclusive again here and is overwritten in place.
        if Arc::get_mut(&mut self.input).is_none() {
            let fresh = match self.input_type {
                InputType::F32 => Tensor::zero::<f32>(&[1, self.n_features]),
                InputType::F64 => Tensor::zero::<f64>(&[1, self.n_features]),
            };
            self.input = Arc::new(fresh.map_err(|_| ScoreError::Runtime)?);
        }
        let tensor = Arc::get_mut(&mut self.input).ok_or(ScoreError::Runtime)?;
        let mut view = tensor
            .try_as_plain_ram_mut()
            .map_err(|_| ScoreError::Runtime)?;
        match self.input_type {
            InputType::F32 => {
                let dst = view
                    .as_slice_mut::<f32>()
                    .map_err(|_| ScoreError::Runtime)?;
                for (d, s) in dst.iter_mut().zip(x) {
                    *d = *s as f32;
                }
            }
            InputType::F64 => {
                view.as_slice_mut::<f64>()
                    .map_err(|_| ScoreError::Runtime)?
                    .copy_from_slice(x);
            }
        }
        let results = self
            .state
            .run(tvec![self.input.clone().into_tvalue()])
            .map_err(|e| {
                tracing::warn!(error = %format!("{e:#}"), "ONNX model run failed");
                ScoreError::Runtime
            })?;
        for (value, slot) in results.iter().zip(out.values.iter_mut()) {
            write_output(value, slot)?;
        }
        Ok(())
    }
}

/// The elements of an output tensor.
fn slice<D: Datum>(t: &Tensor) -> Result<&[D], ScoreError> {
    t.try_as_plain_ram()
        .and_then(|v| v.as_slice::<D>())
        .map_err(|_| ScoreError::Runtime)
}

fn first<D: Datum + Copy>(t: &Tensor) -> Result<D, ScoreError> {
    slice::<D>(t)?.first().copied().ok_or(ScoreError::Runtime)
}

fn write_output(t: &Tensor, slot: &mut Value) -> Result<(), ScoreError> {
    match slot {
        Value::Float(f) => {
            *f = match t.datum_type() {
                DatumType::F32 => first::<f32>(t)? as f64,
                DatumType::F64 => first::<f64>(t)?,
                _ => return Err(ScoreError::Runtime),
            }
        }
        Value::Label(l) => {
            *l = match t.datum_type() {
                DatumType::I64 => first::<i64>(t)?,
                DatumType::I32 => first::<i32>(t)? as i64,
                DatumType::TDim => slice::<TDim>(t)?
                    .first()
                    .and_then(|d| d.to_i64().ok())
                    .ok_or(ScoreError::Runtime)?,
                _ => return Err(ScoreError::Runtime),
            }
        }
        Value::Vector(v) => {
            v.clear();
            match t.datum_type() {
                DatumType::F32 => v.extend(slice::<f32>(t)?.iter().map(|&x| x as f64)),
                DatumType::F64 => v.extend_from_slice(slice::<f64>(t)?),
                _ => return Err(ScoreError::Runtime),
            }
        }
    }
    Ok(())
}

// ---- ONNX-ML operators tract lacks -------------------------------------

/// `Scaler`: `y = (x - offset) * scale` (ai.onnx.ml).
#[derive(Debug, Clone)]
struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset: Vec<f32> = node
        .get_attr_opt_vec("offset")?
        .unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    Ok((expand(Scaler { offset, scale }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        let fact = model.outlet_fact(x)?.clone();
        ensure!(
            fact.rank() >= 1,
            "Scaler expects an input of rank 1 or more"
        );
        if let Some(n) = fact.shape.last().and_then(|d| d.to_usize().ok()) {
            for (attr, len) in [("offset", self.offset.len()), ("scale", self.scale.len())] {
                ensure!(
                    len == 1 || len == n,
                    "Scaler {attr} has {len} values for {n} features"
                );
            }
        }
        if fact.datum_type != f32::datum_type() {
            x = model.wire_node(
                format!("{prefix}.to_f32"),
                tract_onnx::tract_core::ops::cast::cast(f32::datum_type()),
                &[x],
            )?[0];
        }
        let offset = model.add_const(
            format!("{prefix}.offset"),
            tensor1(&self.offset).into_arc_tensor(),
        )?;
        let scale = model.add_const(
            format!("{prefix}.scale"),
            tensor1(&self.scale).into_arc_tensor(),
        )?;
        let centred = wire_with_rank_broadcast(
            format!("{prefix}.sub"),
            model,
            tract_onnx::tract_core::ops::math::sub(),
            &[x, offset],
        )?[0];
        wire_with_rank_broadcast(
            format!("{prefix}.mul"),
            model,
            tract_onnx::tract_core::ops::math::mul(),
            &[centred, scale],
        )
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(1)
    }
}

/// `ArrayFeatureExtractor`: `X[..., indices]` along the last axis (ai.onnx.ml).
#[derive(Debug, Clone)]
struct ArrayFeatureExtractor;

fn array_feature_extractor(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.given(&inputs[0].rank, move |s, rank| {
            s.equals(&outputs[0].rank, rank.max(2))?;
            Ok(())
        })?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, indices| {
            let k: TDim = indices.iter().product();
            let mut shape: TVec<TDim> = if x.len() == 1 {
                tvec![1.into()]
            } else {
                x.clone()
            };
            if x.len() > 1 {
                shape.pop();
            }
            shape.push(k);
            s.equals(&outputs[0].shape, shape)?;
            Ok(())
        })?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x_rank = model.outlet_fact(inputs[0])?.rank();
        let indices_fact = model.outlet_fact(inputs[1])?.clone();
        let mut indices = inputs[1];
        if indices_fact.datum_type != i64::datum_type() {
            indices = model.wire_node(
                format!("{prefix}.indices_to_i64"),
                tract_onnx::tract_core::ops::cast::cast(i64::datum_type()),
                &[indices],
            )?[0];
        }
        if indices_fact.rank() != 1 {
            let from: TVec<TDim> = indices_fact.shape.iter().cloned().collect();
            let k: TDim = from.iter().product();
            indices = model.wire_node(
                format!("{prefix}.flatten_indices"),
                AxisOp::Reshape(0, from, tvec![k]),
                &[indices],
            )?[0];
        }
        let gathered = model.wire_node(
            prefix,
            tract_onnx::tract_core::ops::array::Gather::new(x_rank - 1),
            &[inputs[0], indices],
        )?;
        if x_rank == 1 {
            model.wire_node(
                format!("{prefix}.add_batch_axis"),
                AxisOp::Add(0),
                &gathered,
            )
        } else {
            Ok(gathered)
        }
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(1)
    }
}

#!/usr/bin/env python3
"""Train the small models coreline's model tests score, with the real libraries.

Run from the repository root:  python3 tests/models/make.py

Versions used for the committed files (pip install scikit-learn xgboost lightgbm
skl2onnx onnxruntime onnx):
    scikit-learn 1.9.1, xgboost 3.2.0, lightgbm 4.7.0, skl2onnx 1.20.0,
    onnxruntime 1.32.0, onnx 1.23.2, numpy 2.4.6

For every model it writes, under tests/models/:
    <name>.onnx | <name>.json (XGBoost save_model) | <name>.txt (LightGBM save_model)
    unsupported_tree_regressor.onnx: an operator coreline does not run (error test)
    <name>.expected.json: {"model", "features", "rows": [[...]], "outputs": {name: [...]}}
The test rows are held-out rows of the data set with some values set to missing
(NaN, written as JSON null). "outputs" are the library's own predictions for those
rows (onnxruntime for ONNX, Booster.predict for XGBoost and LightGBM).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import lightgbm as lgb
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(7)
N_TEST = 40


def split(x, y):
    idx = RNG.permutation(len(x))
    test, train = idx[:N_TEST], idx[N_TEST:]
    return x[train], y[train], x[test], y[test]


def with_missing(x, frac=0.1):
    x = x.astype(np.float64).copy()
    mask = RNG.random(x.shape) < frac
    mask[:5] = False  # the first rows stay complete
    x[mask] = np.nan
    return x


def jsonable(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return [[None if np.isnan(v) else float(v) for v in r] if a.ndim == 2 else
                (None if np.isnan(r) else float(r)) for r in a]
    return a.tolist()


def write_expected(name, model_file, features, rows, outputs):
    doc = {
        "model": model_file,
        "features": features,
        "rows": jsonable(rows),
        "outputs": {k: jsonable(v) for k, v in outputs.items()},
    }
    with open(os.path.join(HERE, name + ".expected.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def onnx_model(name, pipe, x_train, x_test):
    model = to_onnx(pipe, x_train[:1].astype(np.float32),
                    options={id(pipe): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = os.path.join(HERE, name + ".onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = {o.name: [] for o in sess.get_outputs()}
    for row in x_test.astype(np.float32):
        res = sess.run(None, {sess.get_inputs()[0].name: row[None, :]})
        for o, r in zip(sess.get_outputs(), res):
            outputs[o.name].append(r[0])
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"{name}.onnx: ops {ops}, outputs {list(outputs)}")
    write_expected(name, name + ".onnx", x_test.shape[1], x_test, outputs)


def main():
    # ONNX: StandardScaler + LogisticRegression on iris (Scaler, LinearClassifier, Normalizer...)
    x, y = load_iris(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(xtr, ytr)
    onnx_model("iris", pipe, xtr, xte)

    # ONNX: MLP 64-32 on digits (MatMul, Relu, Softmax, ArgMax, ArrayFeatureExtractor...)
    x, y = load_digits(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0).fit(xtr, ytr)
    onnx_model("digits_mlp", mlp, xtr, xte)

    # An ONNX graph with an operator neither tract nor coreline implements
    # (TreeEnsembleRegressor, from a depth-2 DecisionTreeRegressor): loading it must
    # fail and name the operator.
    from sklearn.tree import DecisionTreeRegressor
    x, y = load_diabetes(return_X_y=True)
    tree = DecisionTreeRegressor(max_depth=2, random_state=0).fit(x, y)
    model = to_onnx(tree, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.save(model, os.path.join(HERE, "unsupported_tree_regressor.onnx"))

    # XGBoost binary classifier on breast cancer, with missing values in training too.
    x, y = load_breast_cancer(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    xtr_m = with_missing(xtr, 0.05)
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(xtr_m, ytr)
    xgb_model("xgb_binary", clf.get_booster(), with_missing(xte))

    # XGBoost 100 trees of depth 6 (the bench model), same data.
    clf = xgb.XGBClassifier(n_estimators=100, max_depth=6, learning_rate=0.1,
                            random_state=0).fit(xtr_m, ytr)
    xgb_model("xgb_binary_100", clf.get_booster(), with_missing(xte))

    # XGBoost multi-class on iris.
    x, y = load_iris(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    clf = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0).fit(xtr, ytr)
    xgb_model("xgb_multi", clf.get_booster(), with_missing(xte))

    # XGBoost regressor on diabetes.
    x, y = load_diabetes(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    reg = xgb.XGBRegressor(n_estimators=30, max_depth=4, random_state=0).fit(
        with_missing(xtr, 0.05), ytr)
    xgb_model("xgb_reg", reg.get_booster(), with_missing(xte))

    # LightGBM binary classifier on breast cancer (NaN missing type learnt from training NaNs).
    x, y = load_breast_cancer(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    booster = lgb.train({"objective": "binary", "num_leaves": 8, "verbose": -1, "seed": 0},
                        lgb.Dataset(with_missing(xtr, 0.05), ytr), num_boost_round=20)
    lgb_model("lgb_binary", booster, with_missing(xte))

    # LightGBM multi-class on iris (no missing values in training: missing type None).
    x, y = load_iris(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 4,
                         "min_data_in_leaf": 5, "verbose": -1, "seed": 0},
                        lgb.Dataset(xtr, ytr), num_boost_round=10)
    lgb_model("lgb_multi", booster, with_missing(xte))

    # LightGBM regressor on diabetes, zero_as_missing (missing type Zero).
    x, y = load_diabetes(return_X_y=True)
    xtr, ytr, xte, _ = split(x, y)
    xtr = xtr.copy()
    xtr[RNG.random(xtr.shape) < 0.05] = 0.0
    xte_m = with_missing(xte)
    xte_m[3, 2] = 0.0
    booster = lgb.train({"objective": "regression", "num_leaves": 8, "verbose": -1, "seed": 0,
                         "zero_as_missing": True},
                        lgb.Dataset(xtr, ytr), num_boost_round=30)
    lgb_model("lgb_reg", booster, xte_m)

    # XGBoost fraud model for configs/fraud.toml, on simulated card transactions. The
    # features are what the config computes per request: the amount, then the card's
    # count, sum and ewma(amount, 0.1) after this transaction (coreline's aggregate
    # outputs), and amount / ewma.
    x, y = simulated_card_transactions()
    xtr, ytr, xte, _ = split(x, y)
    clf = xgb.XGBClassifier(n_estimators=30, max_depth=4, random_state=0).fit(xtr, ytr)
    xgb_model("fraud", clf.get_booster(), xte)


def simulated_card_transactions(cards=300, per_card=12, fraud_rate=0.04):
    rows, labels = [], []
    for _ in range(cards):
        typical = RNG.lognormal(3.5, 0.6)
        n, total, ewma = 0, 0.0, None
        for _ in range(per_card):
            fraud = RNG.random() < fraud_rate
            amount = typical * (RNG.uniform(6, 25) if fraud else RNG.lognormal(0, 0.35))
            amount = round(amount, 2)
            n += 1
            total += amount
            ewma = amount if ewma is None else 0.1 * amount + 0.9 * ewma
            rows.append([amount, n, total, ewma, amount / ewma])
            labels.append(int(fraud))
    return np.array(rows), np.array(labels)


def xgb_model(name, booster, x_test):
    booster.save_model(os.path.join(HERE, name + ".json"))
    # Re-load what was saved so that the expected values come from the file itself.
    b = xgb.Booster(model_file=os.path.join(HERE, name + ".json"))
    pred = b.predict(xgb.DMatrix(x_test, missing=np.nan))
    outputs = {"prediction": pred}
    print(f"{name}.json: {b.num_boosted_rounds()} rounds, pred shape {pred.shape}")
    write_expected(name, name + ".json", x_test.shape[1], x_test, outputs)


def lgb_model(name, booster, x_test):
    booster.save_model(os.path.join(HERE, name + ".txt"))
    b = lgb.Booster(model_file=os.path.join(HERE, name + ".txt"))
    pred = b.predict(x_test)
    print(f"{name}.txt: {b.num_trees()} trees, pred shape {pred.shape}")
    write_expected(name, name + ".txt", x_test.shape[1], x_test, {"prediction": pred})


if __name__ == "__main__":
    main()

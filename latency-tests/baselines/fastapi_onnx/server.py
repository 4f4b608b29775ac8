"""FastAPI + onnxruntime serving the digits MLP: the baseline the Python world uses.

Same model and same JSON as coreline's model route:
    POST /score   {"features": [64 numbers]}  ->  {"label": 3, "probabilities": [10 numbers]}
    GET  /health  -> {"ok": true}

Run (one worker, pinned to core 0 like the other baselines):
    pip install -r requirements.txt
    taskset -c 0 python3 server.py --port 32080 [--model PATH]
The default model is tests/models/digits_mlp.onnx of this repository.
"""

import argparse
import os

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "..", "..", "..", "tests", "models", "digits_mlp.onnx")


class Request(BaseModel):
    features: list[float]


def make_app(model_path: str) -> FastAPI:
    options = ort.SessionOptions()
    # One worker, one core: no intra-op thread pool competing for the core.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    n_features = session.get_inputs()[0].shape[1]
    app = FastAPI()

    @app.post("/score")
    def score(req: Request):
        if len(req.features) != n_features:
            raise HTTPException(
                status_code=422,
                detail=f"features: expected {n_features} numbers, found {len(req.features)}",
            )
        x = np.asarray(req.features, dtype=np.float32).reshape(1, n_features)
        label, probabilities = session.run(None, {input_name: x})
        return {"label": int(label[0]), "probabilities": probabilities[0].tolist()}

    @app.get("/health")
    def health():
        return {"ok": True}

    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=32080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    uvicorn.run(make_app(args.model), host=args.host, port=args.port, workers=1,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""The CRI v1 API (Kubernetes' `runtime.v1`), generated for tests/cri.py.

api.proto is `pkg/apis/runtime/v1/api.proto` of github.com/kubernetes/cri-api at tag v0.36.3
(commit 1733b6a9fa123c5887eefa14523c532b12827f73), unchanged.  api_pb2.py and api_pb2_grpc.py
were generated from it with grpcio-tools 1.85.4 (protobuf gencode 7.35.1), from the checkout's
root:

    pip install grpcio-tools==1.85.4
    python -m grpc_tools.protoc -I tests --python_out=tests --grpc_python_out=tests tests/cri_v1/api.proto

They need grpcio >= 1.85.4 and protobuf >= 7.35.1 at run time (pyproject's `test` extra).  Every
containerd the lab runs (1.6.20, 1.7.34, 2.3.4) serves this API version.
"""

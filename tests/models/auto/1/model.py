"""Completes its own config (auto_complete_config): two FP32 [4] inputs (INPUT0 optional), a
STRING output, max_batch_size 8, dynamic batching, decoupled. It checks that it is named auto.
"""


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        assert config["name"] == "auto"
        auto_complete_model_config.add_input(
            {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4], "optional": True}
        )
        auto_complete_model_config.add_input(
            {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}
        )
        auto_complete_model_config.add_output(
            {"name": "OUTPUT0", "data_type": "TYPE_STRING", "dims": [-1]}
        )
        auto_complete_model_config.set_max_batch_size(8)
        auto_complete_model_config.set_dynamic_batching()
        auto_complete_model_config.set_model_transaction_policy({"decoupled": True})
        return auto_complete_model_config

    def execute(self, requests):
        return None

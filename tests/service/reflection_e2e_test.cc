// Server reflection v1 (grpc.reflection.v1.ServerReflection), which grpcurl and current gRPC
// libraries ask for first, beside v1alpha: with the C++ stubs of both, and with a real client
// of another stack (Node.js: @grpc/grpc-js and grpc-js-reflection-client, installed by npm into
// the build folder) that discovers qwen.v1.Qwen through v1 only and calls it.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"

namespace qwen::testing {
namespace {

namespace v1r = ::grpc::reflection::v1;
namespace v1a = ::grpc::reflection::v1alpha;

class ReflectionE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcess::Options o;
    o.model = "models/tiny-qwen35-q3_k_m.gguf";
    o.workers = 1;
    o.forced_output = false;
    std::string error;
    server_ = ServerProcess::Start(o, &error).release();
    ASSERT_NE(server_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop(absl::Seconds(30));
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // One request on a fresh v1 stream.
  static v1r::ServerReflectionResponse AskV1(const v1r::ServerReflectionRequest& req) {
    auto stub = v1r::ServerReflection::NewStub(server_->channel());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto stream = stub->ServerReflectionInfo(&ctx);
    v1r::ServerReflectionResponse resp;
    EXPECT_TRUE(stream->Write(req));
    EXPECT_TRUE(stream->Read(&resp));
    stream->WritesDone();
    const grpc::Status st = stream->Finish();
    EXPECT_TRUE(st.ok()) << st.error_code() << ": " << st.error_message();
    return resp;
  }

  static std::set<std::string> ListV1() {
    v1r::ServerReflectionRequest req;
    req.set_list_services("");
    const v1r::ServerReflectionResponse resp = AskV1(req);
    std::set<std::string> out;
    for (const auto& s : resp.list_services_response().service()) out.insert(s.name());
    return out;
  }

  static std::set<std::string> ListV1alpha() {
    auto stub = v1a::ServerReflection::NewStub(server_->channel());
    grpc::ClientContext ctx;
    auto stream = stub->ServerReflectionInfo(&ctx);
    v1a::ServerReflectionRequest req;
    req.set_list_services("");
    v1a::ServerReflectionResponse resp;
    EXPECT_TRUE(stream->Write(req));
    EXPECT_TRUE(stream->Read(&resp));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    std::set<std::string> out;
    for (const auto& s : resp.list_services_response().service()) out.insert(s.name());
    return out;
  }

  static ServerProcess* server_;
};

ServerProcess* ReflectionE2eTest::server_ = nullptr;

TEST_F(ReflectionE2eTest, V1ListsWhatV1alphaLists) {
  const std::set<std::string> v1 = ListV1();
  EXPECT_TRUE(v1.count("qwen.v1.Qwen"));
  EXPECT_TRUE(v1.count("grpc.health.v1.Health"));
  EXPECT_TRUE(v1.count("grpc.reflection.v1.ServerReflection"));
  EXPECT_EQ(v1, ListV1alpha());
}

TEST_F(ReflectionE2eTest, V1DescribesTheApiWithItsImports) {
  v1r::ServerReflectionRequest req;
  req.set_host("localhost");
  req.set_file_containing_symbol("qwen.v1.Qwen.Generate");
  const v1r::ServerReflectionResponse resp = AskV1(req);
  ASSERT_FALSE(resp.has_error_response()) << resp.error_response().error_message();
  EXPECT_EQ(resp.valid_host(), "localhost");
  EXPECT_EQ(resp.original_request().file_containing_symbol(), "qwen.v1.Qwen.Generate");
  std::vector<std::string> names;
  bool has_generate = false;
  for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    names.push_back(file.name());
    for (const auto& service : file.service()) {
      for (const auto& method : service.method()) {
        if (service.name() == "Qwen" && method.name() == "Generate") {
          has_generate = method.server_streaming();
        }
      }
    }
  }
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names[0], "qwen/v1/qwen.proto");
  // Each import once, after the file that needs it.
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  EXPECT_THAT(names, ::testing::Contains("google/protobuf/struct.proto"));
  EXPECT_TRUE(has_generate);

  req.Clear();
  req.set_file_by_filename("grpc/health/v1/health.proto");
  EXPECT_EQ(AskV1(req).file_descriptor_response().file_descriptor_proto_size(), 1);
}

TEST_F(ReflectionE2eTest, V1AnswersUnknownNamesWithNotFound) {
  v1r::ServerReflectionRequest req;
  req.set_file_containing_symbol("no.such.Service");
  v1r::ServerReflectionResponse resp = AskV1(req);
  ASSERT_TRUE(resp.has_error_response());
  EXPECT_EQ(resp.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
  req.Clear();
  req.set_file_by_filename("no/such.proto");
  EXPECT_EQ(AskV1(req).error_response().error_code(), grpc::StatusCode::NOT_FOUND);
  req.Clear();
  req.set_all_extension_numbers_of_type("qwen.v1.GenerateRequest");
  resp = AskV1(req);
  EXPECT_FALSE(resp.has_error_response());
  EXPECT_EQ(resp.all_extension_numbers_response().base_type_name(), "qwen.v1.GenerateRequest");
}

// A client of another gRPC stack that speaks v1 only, as a user's tool would.
TEST_F(ReflectionE2eTest, ANodeClientDiscoversAndCallsTheApiThroughV1) {
  int code = -1;
  RunCommand("command -v node >/dev/null && command -v npm >/dev/null", &code);
  ASSERT_EQ(code, 0) << "node and npm are needed (the machine's Node.js 20 and npm)";
  // Installed once per build folder; npm keeps it there between runs.
  const std::string dir = BinPath("../npm/reflection-client");
  const std::string src = DataPath("../service/reflection_client");
  std::string out =
      RunCommand(absl::StrCat("mkdir -p '", dir, "' && cp '", src, "/package.json' '", src,
                              "/reflect.js' '", dir, "/' && cd '", dir,
                              "' && (test -d node_modules/grpc-js-reflection-client || npm install "
                              "--no-audit --no-fund --loglevel=error) 2>&1"),
                 &code);
  ASSERT_EQ(code, 0) << out;
  out = RunCommand(
      absl::StrCat("cd '", dir, "' && timeout 120 node reflect.js ", server_->address(), " 2>&1"),
      &code);
  ASSERT_EQ(code, 0) << out;
  const nlohmann::json got = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(got.is_discarded()) << out;
  EXPECT_THAT(got["services"].get<std::vector<std::string>>(), ::testing::Contains("qwen.v1.Qwen"));
  EXPECT_EQ(got["architecture"], "qwen35");
  // The same ids the C++ client gets.
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_text("Hello, world!");
  v1::TokenizeResponse resp;
  ASSERT_TRUE(server_->Stub()->Tokenize(&ctx, req, &resp).ok());
  EXPECT_EQ(got["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()));
}

}  // namespace
}  // namespace qwen::testing

module github.com/zcnet/zcnet/thirdparty

go 1.24

require (
	github.com/zcnet/zcnet v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.35.0
	google.golang.org/grpc v1.75.1
)

require (
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/net v0.43.0 // indirect
	golang.org/x/text v0.28.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250707201910-8d1bb00bc6a7 // indirect
	google.golang.org/protobuf v1.36.6 // indirect
)

replace github.com/zcnet/zcnet => ../

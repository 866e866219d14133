// Package thirdparty holds zcnet's tests against large third-party modules (grpc-go), in
// a module of their own so that the zcnet module requires none of them: a program that
// imports zcnet keeps the versions of those modules it chose itself. It has no API.
package thirdparty
